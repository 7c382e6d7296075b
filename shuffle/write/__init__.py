"""The map side: the three shuffle writers and what they share.

``bypass`` (a file per reduce partition, concatenated), ``serialized``
(records serialized at once into pages, packed pointers radix-sorted by
partition) and ``sort`` (map-side combine, sorted spills, k-way merge).
Every writer commits through :class:`~shuffle.write.output.MapOutputWriter`.
"""
