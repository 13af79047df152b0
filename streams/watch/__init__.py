"""``mis watch``: the pipeline at work, live on the terminal.

``model`` is pure (changes, their correlation with snapshots and sink writes, figures, text),
``arrivals`` is all the watch knows about how the sinks record their writes, ``source`` reads
Kafka, Postgres and MongoDB and feeds the model, and ``view`` draws the figures.
"""
