"""Data: synthetic Codette conversations, the user's own files, packing into token memmaps."""
