"""Baidu's LAC-small network (shipped in the ``jieba`` wheel), ported to torch."""
from .encoder import LACEncoder
from .assets import find_lac_dir, load_lac_encoder
from .paddle_files import PaddleFileError, read_paddle_tensor

__all__ = ["LACEncoder", "PaddleFileError", "find_lac_dir", "load_lac_encoder", "read_paddle_tensor"]
