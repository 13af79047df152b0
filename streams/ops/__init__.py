"""Operations on a running deployment: ``mis replay``, ``mis backfill``, ``mis republish``.

One module per command (replay, backfill, republish), on shared plumbing: the consumer group and
offsets (kafka), the join-state rebuild (rebuild), waiting for the workers (follow) and the
terminal (terminal). ``commands`` wires them into the ``mis`` command line.
"""
