"""The Storage Guard HTTP API, served by every worker of the pipeline (see streams.web).

Every request is answered from Postgres and MongoDB, never from a worker's own tables, so any
worker answers any request the same way, whichever partitions it owns.
"""
