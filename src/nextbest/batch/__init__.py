"""Batch scoring of whole customer bases: chunked, resumable, on one machine or on Spark.

`chunk` scores one chunk of customers (every engine goes through it), `job` is the local engine,
`spark` the PySpark one, `buckets` splits tables into chunks by customer.
"""
