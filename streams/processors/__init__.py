"""The pipeline's stateful operators, one per key space, with no Faust and no Kafka in them.

A processor is handed the state of one key and the messages that reached the key, and returns
the state, the messages to send and the key's next deadline. The Faust adapters
(streams.agents) load and store the states, decode the events, send what a processor returns
and wake the key at its deadline; everything else is here, and is tested without a broker
(tests/unit/test_processors_*.py).

The lifecycle, the same for every key of every key space, within one batch of events:

1. The adapter loads the key's state (a new one when the table has none) and applies the
   partition's TRUNCATE marks it has not seen (``truncate``).
2. ``apply(state, message, now)`` once per message for the key, in the order they were read.
   It changes the state in place and returns whether the key's content changed; a change
   opens the key's conflation window (streams.conflate), unless one is open already.
3. ``flush(key, state, now, ...)`` once per key the batch touched, after all of its messages,
   and again for every key whose window or deadline has passed (a tick brings those up). It
   returns a ``Step``: the messages to send, when the key is due again (its window), its next
   deadline if it was evaluated, and whether its state is to be deleted. The state as
   ``flush`` leaves it is what the adapter stores.

A processor never blocks and reads nothing but its arguments: time is the ``now`` it is given,
settings are fixed when it is built. Replaying the same messages onto the same state at the
same times gives the same states and messages; that is what makes a replay rebuild the same
snapshots (docs/snapshot-contract.md).
"""

from streams.processors.step import Out, Step

__all__ = ["Out", "Step"]
