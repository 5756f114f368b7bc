"""The query API's routes, one module a kind.

search (search, history, event), evidence (proof, checkpoint, consistency) and export;
`create_app` (api/query/app.py) includes them in that order.
"""
