"""The reduce side: fetch a reducer's blocks (``fetcher``, ``fetch_pool``, ``block_io``) and read records."""
