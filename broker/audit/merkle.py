"""Merkle tree of RFC 9162 (Certificate Transparency v2), section 2.1, as pure functions over bytes.

Trees are never materialised. A proof is a list of subtree hashes; which subtrees it needs is
worked out from the sizes alone (`inclusion_ranges`, `consistency_ranges`), and the caller supplies
their hashes through `get_node(start, end)`, so a store can answer from the perfect subtree hashes
it keeps (`perfect_cover` says which) instead of rehashing the log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

NodeGetter = Callable[[int, int], bytes]


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """A perfect subtree: the 2**level leaves starting at index << level."""

    level: int
    index: int

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split_point(size: int) -> int:
    """Largest power of two strictly below `size` (size >= 2): where MTH splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_cover(start: int, end: int) -> list[NodeId]:
    """The aligned perfect subtrees that make up leaves [start, end), largest (leftmost) first.

    This is how MTH itself splits a range, so folding their hashes from the right
    (`fold_cover`) gives MTH of the range. Raises ValueError for a range no tree splits that way.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad leaf range [{start}, {end})")
    cover: list[NodeId] = []
    position = start
    length = end - start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            if position % (1 << level):
                raise ValueError(f"leaf range [{start}, {end}) is not a subtree of any log")
            cover.append(NodeId(level, position >> level))
            position += 1 << level
    return cover


def fold_cover(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its `perfect_cover`, in the same order."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH of the leaves whose leaf hashes are given."""
    tree = CompactRange()
    for hashed in hashes:
        tree.append(hashed)
    return tree.root()


def root_from_leaves(leaves: Iterable[bytes]) -> bytes:
    """MTH (RFC 9162 section 2.1.1) of the leaf inputs (entry bytes, not yet hashed)."""
    return root_from_leaf_hashes(leaf_hash(leaf) for leaf in leaves)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH make up PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _split_point(high - low)
        if index < middle:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            low = middle
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTH make up PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1).

    Empty when the sizes are equal or the old tree is empty: nothing needs proving.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    low, high, old = 0, new_size, old_size
    # True while the old tree is still a left-aligned prefix of the subtree we are in (the RFC's `b`).
    old_is_whole_prefix = True
    while old != high - low:
        middle = low + _split_point(high - low)
        if old <= middle - low:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            old -= middle - low
            low = middle
            old_is_whole_prefix = False
    if not old_is_whole_prefix:
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def inclusion_path(index: int, size: int, get_node: NodeGetter) -> list[bytes]:
    return [get_node(start, end) for start, end in inclusion_ranges(index, size)]


def consistency_path(old_size: int, new_size: int, get_node: NodeGetter) -> list[bytes]:
    return [get_node(start, end) for start, end in consistency_ranges(old_size, new_size)]


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def _skip_promoted_levels(first: int, second: int) -> tuple[int, int]:
    """Climb while `first` is a left child with nothing to its right: such a node is promoted
    unchanged to the level above, so those levels contribute no hash to the path."""
    while first and not first & 1:
        first >>= 1
        second >>= 1
    return first, second


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `leaf` (a leaf hash) sit at `index` of the tree of `size` with `root`?"""
    if not 0 <= index < size or not _well_formed(leaf, root, *path):
        return False
    # `position` walks the leaf's ancestors; `last` walks the ancestors of the tree's last leaf.
    position, last = index, size - 1
    computed = leaf
    for sibling in path:
        if last == 0:
            return False  # path longer than the tree is tall
        if position & 1 or position == last:
            computed = node_hash(sibling, computed)
            if not position & 1:
                position, last = _skip_promoted_levels(position, last)
        else:
            computed = node_hash(computed, sibling)
        position >>= 1
        last >>= 1
    return last == 0 and hmac.compare_digest(computed, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of `new_size`/`new_root` an extension of `old_size`/`old_root`?"""
    if not 0 <= old_size <= new_size or not _well_formed(old_root, new_root, *path):
        return False
    if old_size == new_size:
        return not path and hmac.compare_digest(old_root, new_root)
    if old_size == 0:
        return not path and hmac.compare_digest(old_root, EMPTY_ROOT)
    if not path:
        return False
    hashes = list(path)
    if old_size & (old_size - 1) == 0:
        # A power-of-two old tree is itself a node of the new tree, so the proof omits it.
        hashes.insert(0, old_root)
    position, last = old_size - 1, new_size - 1
    # Start at the highest node whose right edge is the old tree's last leaf: the first hash.
    while position & 1:
        position >>= 1
        last >>= 1
    # Two roots rebuilt side by side: the old one only ever takes hashes from its left.
    old_computed = new_computed = hashes[0]
    for sibling in hashes[1:]:
        if last == 0:
            return False
        if position & 1 or position == last:
            old_computed = node_hash(sibling, old_computed)
            new_computed = node_hash(sibling, new_computed)
            if not position & 1:
                position, last = _skip_promoted_levels(position, last)
        else:
            new_computed = node_hash(new_computed, sibling)
        position >>= 1
        last >>= 1
    return (
        last == 0
        and hmac.compare_digest(old_computed, old_root)
        and hmac.compare_digest(new_computed, new_root)
    )


class CompactRange:
    """The right border of a log: one perfect subtree hash per set bit of its size.

    Appending a leaf costs O(log n) and returns every perfect subtree it completes (the leaf
    itself and the merges), which is exactly what a store persists.
    """

    def __init__(self) -> None:
        self._size = 0
        self._border: list[bytes] = []

    @classmethod
    def from_border(cls, *, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Resume from the hashes of `perfect_cover(0, size)`, largest first."""
        if size < 0 or len(hashes) != size.bit_count() or not _well_formed(*hashes):
            raise ValueError(f"a border of size {size} needs {max(size, 0).bit_count()} hashes")
        compact = cls()
        compact._size = size
        compact._border = list(hashes)
        return compact

    @property
    def size(self) -> int:
        return self._size

    @property
    def border(self) -> list[bytes]:
        return list(self._border)

    def copy(self) -> CompactRange:
        return CompactRange.from_border(size=self._size, hashes=self._border)

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Add a leaf hash; return the perfect subtrees it completes, smallest first."""
        if not _well_formed(leaf):
            raise ValueError("a leaf hash is 32 bytes")
        node, hashed = NodeId(0, self._size), leaf
        completed = [(node, hashed)]
        # Each trailing one bit of the old size is a left sibling waiting for this leaf's subtree.
        remaining = self._size
        while remaining & 1:
            hashed = node_hash(self._border.pop(), hashed)
            node = NodeId(node.level + 1, node.index >> 1)
            completed.append((node, hashed))
            remaining >>= 1
        self._border.append(hashed)
        self._size += 1
        return completed

    def root(self) -> bytes:
        return fold_cover(self._border)
