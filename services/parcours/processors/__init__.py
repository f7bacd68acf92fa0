"""Stream processors: the case-file processor (faust), the ingress validator, views rebuild."""
