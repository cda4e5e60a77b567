"""Knowledge libraries at run time: document index, retrieval, glossary.

* ``indexer``  -- chunks a library's documents and builds the SQLite FTS5 index
  shipped inside the package (called by ``llmos build``).
* ``retrieve`` -- opens the indexes of the attached libraries and merges their
  BM25 rankings into one list of cited chunks.
* ``glossary`` -- the glossary format, its normalised form and term matching.
* ``libraries`` -- what an installed library offers to a prompt (index,
  glossary, system fragment, tools), read from the state database.

Nothing here imports heavy modules; ``sqlite3`` is the only engine.
"""
