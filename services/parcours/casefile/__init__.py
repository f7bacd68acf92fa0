"""The case file: pure functions over plain data. No Kafka client, stream engine or FastAPI import here.

- `state`: the fold of a case's events into an order- and duplicate-independent state;
- `policy`: who may see which item (docs/consent-rules.md);
- `view`: the projection of a state into one structure's view, and view diffs.
"""
