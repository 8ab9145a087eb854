"""`openseedance serve`: the Ark-compatible and OpenAI-compatible video APIs over a durable job store,
generation workers, and a web page."""
