"""Compression of a finished level: k-means weight sharing, int8, Huffman storage.

May import: lth.config, lth.sparsity, lth.train, lth.runs, lth.lottery.
"""
