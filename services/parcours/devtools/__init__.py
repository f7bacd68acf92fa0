"""Development tools, beside the runtime: the demo territory (`demo`), recordings of topics
(`recording`), the benchmark (`bench`, `benchkit`, `benchreport`) and its HTTP load generators
(`benchload`). They use the runtime's public names only; no service imports them."""
