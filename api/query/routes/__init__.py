"""The query API's routes, one module a kind.

search (search, history, event), evidence (proof, checkpoint, consistency), export, metrics
and tiles (the tlog-tiles API of every log);
`create_app` (api/query/app.py) includes them in that order.
"""
