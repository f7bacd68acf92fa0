"""Stream processors: the case-file processor (Quix Streams), the ingress validator, views rebuild."""
