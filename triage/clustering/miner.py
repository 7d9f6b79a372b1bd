"""The streaming template miner: masked message in, template node out, no linear scan on the hot path.

Three levels, cheapest first:

1. **Exact cache**: masked text -> node. After masking, the lines of one template repeat the same
   masked text almost always, so a dict hit ends the work (the hot path).
2. **Template index**: nodes are bucketed by token count; inside a bucket, by the set of wildcard
   positions of their template, then by the template tokens. A new masked line is projected onto each
   distinct wildcard-position set of its bucket (a handful, not one per cluster) and looked up.
3. **Similarity** (only for lines whose shape was never seen): candidates come from an inverted index
   (position, token) -> nodes, filtered with the prefix principle, and the best one above the
   threshold is generalised (differing constant positions become wildcards). Otherwise a node is created.

When a template generalises, the node keeps its id; the id the new template hashes to is recorded as an
alias. If the generalised template now covers other templates of the bucket, they are merged into it
(their ids become aliases too) and the owner is told through ``on_merge``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator

from triage.clustering.masking import WILDCARD, mask_text, tokenize

# Similarity: share of the line's positions whose constant token equals the template's.
DEFAULT_SIMILARITY = 0.5
# Distinct plain words seen at one position (the rest equal) before it counts as a variable.
MIN_WORD_VALUES = 3


_ZERO_DIGITS = str.maketrans("123456789", "000000000")


def template_id(text: str) -> str:
    """The stable id of a template or fingerprint: ``c`` + 15 hex chars of blake2b."""
    return "c" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()[:15]


class Node:
    """One template: its tokens, stable id and aliases. ``payload`` belongs to the owner."""

    __slots__ = ("aliases", "alive", "ghost", "id", "merged_into", "payload", "seq", "template", "tokens", "wild")

    def __init__(self, tokens: list[str], node_id: str, seq: int) -> None:
        self.tokens = tokens
        self.template = " ".join(tokens)
        self.id = node_id
        self.seq = seq
        self.wild = wild_of(tokens)
        self.aliases: list[str] = []
        self.alive = True  # indexed (live, or a ghost kept to recreate an evicted cluster's id)
        self.ghost = False
        self.merged_into: Node | None = None
        self.payload: object = None

    def resolve(self) -> Node:
        """Follow merges to the live node that absorbed this one."""
        node = self
        while node.merged_into is not None:
            node = node.merged_into
        return node


class _Bucket:
    """All templates of one token count."""

    __slots__ = ("by_wild", "postings")

    def __init__(self) -> None:
        self.by_wild: dict[Wild, dict[tuple[str, ...], Node]] = {}
        self.postings: dict[tuple[int, str], dict[Node, None]] = {}


MergeHook = Callable[[Node, Node], None]


class TemplateMiner:
    """Mines templates from messages; see the module docstring for the levels."""

    __slots__ = ("_buckets", "_cache", "_cache_size", "_ghosts", "_max_ghosts", "_on_merge", "_seq", "similarity")

    def __init__(self, *, similarity: float = DEFAULT_SIMILARITY, cache_size: int = 100_000,
                 max_ghosts: int = 20_000, on_merge: MergeHook | None = None) -> None:
        self.similarity = similarity
        self._ghosts: dict[Node, None] = {}
        self._max_ghosts = max_ghosts
        self._cache: dict[str, Node] = {}
        self._cache_size = cache_size
        self._buckets: dict[int, _Bucket] = {}
        self._on_merge = on_merge
        self._seq = 0

    # --- hot path ---------------------------------------------------------------------------------

    def match(self, message: str) -> tuple[Node, bool]:
        """The node for ``message`` (created or generalised if needed) and whether it is new."""
        # Cache key: the line with every digit turned into 0. Masking only looks at character classes,
        # so lines that differ only in digit values mask to the same text: one translate() (C speed)
        # replaces the regex pass for the lines of every known template whose values are numbers.
        masked = message.translate(_ZERO_DIGITS)
        node = self._cache.get(masked)
        if node is not None:
            if node.alive:
                if node.ghost:
                    self._revive(node)
                    return node, True
                return node, False
            node = node.resolve()
            if node.alive:
                self._cache[masked] = node
                return node, False
            del self._cache[masked]
        tokens = tokenize(mask_text(message))
        created = False
        found = self._lookup(tokens)
        if found is None:
            found = self._similar(tokens)
        if found is None:
            found = self._create(tokens, template_id(" ".join(tokens)))
            created = True
        elif found.ghost:
            self._revive(found)
            created = True
        cache = self._cache
        if len(cache) >= self._cache_size:
            # FIFO: drop the oldest eighth; cheaper than LRU bookkeeping on every hit.
            for key in list(self._cache_keys(len(cache) // 8 + 1)):
                del cache[key]
        cache[masked] = found
        return found, created

    def _cache_keys(self, n: int) -> Iterator[str]:
        it = iter(self._cache)
        for _ in range(n):
            yield next(it)

    def _lookup(self, tokens: list[str]) -> Node | None:
        bucket = self._buckets.get(len(tokens))
        if bucket is None:
            return None
        for wild, table in bucket.by_wild.items():
            if wild:
                proj = project(tokens, wild)
                if proj is None:
                    continue
                node = table.get(proj)
            else:
                node = table.get(tuple(tokens))
            if node is not None:
                return node
        return None

    # --- new shapes ---------------------------------------------------------------------------------

    def _similar(self, tokens: list[str]) -> Node | None:
        n = len(tokens)
        bucket = self._buckets.get(n)
        if bucket is None or n == 0:
            return None
        need = self._need(n)
        if need <= 0:
            return None
        # Prefix filter: a template sharing >= need positions shares one of any n - need + 1 positions.
        candidates: dict[Node, None] = {}
        looked = 0
        for i, tok in enumerate(tokens):
            if tok == WILDCARD:
                continue
            posting = bucket.postings.get((i, tok))
            if posting:
                candidates.update(posting)
            looked += 1
            if looked >= n - need + 1:
                break
        best: Node | None = None
        best_rank: tuple[int, int, int] = (-1, -1, 0)
        best_words: list[int] = []
        for node in candidates:
            equal, nconst, words = compare(node.tokens, tokens)
            if equal < self._need(nconst) or len(words) > 1:
                continue
            rank = (0 if words else 1, equal, -node.seq)
            if rank > best_rank:
                best, best_rank, best_words = node, rank, words
        if best is None:
            return None
        if best_words and not self._enough_siblings(best_words[0], tokens, candidates):
            return None
        return self._generalise(best, tokens)

    def _enough_siblings(self, pos: int, tokens: list[str], candidates: Iterable[Node]) -> bool:
        """A plain word differs at ``pos``: treat it as a variable only once ``MIN_WORD_VALUES`` distinct
        words were seen there, the rest of the line being equal (``startup``/``shutdown`` stay apart)."""
        key = (*tokens[:pos], *tokens[pos + 1:])
        values = {tokens[pos]}
        for node in candidates:
            t = node.tokens
            if (*t[:pos], *t[pos + 1:]) == key:
                values.add(t[pos])
        return len(values) >= MIN_WORD_VALUES

    def _need(self, n: int) -> int:
        """Equal constant positions needed to join a template with ``n`` constant tokens."""
        return max(int(self.similarity * n + 0.999999), 1)

    def _create(self, tokens: list[str], node_id: str) -> Node:
        self._seq += 1
        node = Node(tokens, node_id, self._seq)
        self._index(node)
        return node

    def _index(self, node: Node) -> None:
        bucket = self._buckets.get(len(node.tokens))
        if bucket is None:
            bucket = self._buckets[len(node.tokens)] = _Bucket()
        table = bucket.by_wild.get(node.wild)
        if table is None:
            table = bucket.by_wild[node.wild] = {}
        table[tuple(node.tokens)] = node
        for i, tok in enumerate(node.tokens):
            if tok != WILDCARD:
                posting = bucket.postings.get((i, tok))
                if posting is None:
                    posting = bucket.postings[(i, tok)] = {}
                posting[node] = None

    def _unindex(self, node: Node) -> None:
        bucket = self._buckets[len(node.tokens)]
        table = bucket.by_wild.get(node.wild)
        if table is not None:
            if table.get(tuple(node.tokens)) is node:
                del table[tuple(node.tokens)]
            if not table:
                del bucket.by_wild[node.wild]
        for i, tok in enumerate(node.tokens):
            if tok != WILDCARD:
                posting = bucket.postings.get((i, tok))
                if posting is not None:
                    posting.pop(node, None)
                    if not posting:
                        del bucket.postings[(i, tok)]
        if not bucket.by_wild:
            del self._buckets[len(node.tokens)]

    def _generalise(self, node: Node, tokens: list[str]) -> Node:
        new = [merge_token(t, tokens[i]) for i, t in enumerate(node.tokens)]
        if new != node.tokens:
            return self._retemplate(node, new)
        return node

    def _retemplate(self, node: Node, new: list[str]) -> Node:
        """Give ``node`` the template ``new`` and merge every template of the bucket it now covers.

        The oldest node of the merged set survives (its id is kept); the others become its aliases.
        """
        self._unindex(node)
        key = tuple(new)
        wild = wild_of(new)
        group = [node]
        bucket = self._buckets.get(len(new))
        if bucket is not None:
            for table in bucket.by_wild.values():
                for other in table.values():
                    if project(other.tokens, wild) == key:
                        group.append(other)
        survivor = min(group, key=lambda n: (n.ghost, n.seq))
        for other in group:
            if other is not node:
                self._unindex(other)
        survivor.tokens = new
        survivor.template = " ".join(new)
        survivor.wild = wild
        survivor.alive = True
        for other in group:
            if other is survivor:
                continue
            if other.ghost:
                self._ghosts.pop(other, None)
            other.alive = False
            other.merged_into = survivor
            for a in (other.id, *other.aliases):
                if a != survivor.id and a not in survivor.aliases:
                    survivor.aliases.append(a)
        alias = template_id(survivor.template)
        if alias != survivor.id and alias not in survivor.aliases:
            survivor.aliases.append(alias)
        self._index(survivor)
        if self._on_merge is not None:
            for other in group:
                if other is not survivor:
                    self._on_merge(survivor, other)
        return survivor

    # --- owner operations ---------------------------------------------------------------------------

    def insert(self, template: str, node_id: str) -> Node:
        """Add a known template under a known id (restore from the store)."""
        tokens = template.split()
        bucket = self._buckets.get(len(tokens))
        if bucket is not None:
            existing = bucket.by_wild.get(wild_of(tokens), {})
            node = existing.get(tuple(tokens))
            if node is not None:
                return node
        return self._create(tokens, node_id)

    def remove(self, node: Node) -> None:
        """Turn a node evicted by the owner into a ghost: template and id only, so that a later line
        of that template recreates the same id. Ghosts are bounded (oldest forgotten first)."""
        if not node.alive or node.ghost:
            return
        node.ghost = True
        node.payload = None
        self._ghosts[node] = None
        while len(self._ghosts) > self._max_ghosts:
            old = next(iter(self._ghosts))
            del self._ghosts[old]
            old.alive = False
            self._unindex(old)

    def _revive(self, node: Node) -> None:
        node.ghost = False
        self._ghosts.pop(node, None)

    def nodes(self) -> Iterable[Node]:
        """Live nodes (ghosts excluded)."""
        for bucket in self._buckets.values():
            for table in bucket.by_wild.values():
                for node in table.values():
                    if not node.ghost:
                        yield node


Wild = tuple[tuple[int, str], ...]  # (position, key prefix) of each wildcard token of a template
_KV_WILD = re.compile(r"[\w.\-]+=<\*>")
_QUALIFIED = re.compile(r"\w[./\\@:]\w")


def wild_of(tokens: list[str]) -> Wild:
    """The wildcard positions of a template: ``<*>`` tokens and generalised ``key=<*>`` tokens."""
    out: list[tuple[int, str]] = []
    for i, t in enumerate(tokens):
        if t == WILDCARD:
            out.append((i, ""))
        elif t.endswith("=<*>") and _KV_WILD.fullmatch(t) is not None:
            out.append((i, t[:-3]))
    return tuple(out)


def project(tokens: list[str], wild: Wild) -> tuple[str, ...] | None:
    """``tokens`` seen through a template's wildcards, or None when a ``key=`` prefix differs."""
    proj = tokens.copy()
    for i, prefix in wild:
        if prefix:
            if not proj[i].startswith(prefix):
                return None
            proj[i] = prefix + WILDCARD
        else:
            proj[i] = WILDCARD
    return tuple(proj)


def merge_token(t: str, x: str) -> str:
    """The template token covering template token ``t`` and line token ``x``."""
    if t == x:
        return t
    eq = t.find("=")
    if eq > 0 and x[: eq + 1] == t[: eq + 1] and _KV_WILD.fullmatch(t[: eq + 1] + WILDCARD) is not None:
        return t[: eq + 1] + WILDCARD
    return WILDCARD


def variable_pair(t: str, x: str) -> bool:
    """Whether two differing tokens look like two values of a variable rather than two constants.

    Masked parts, ``key=`` values of the same key and qualified names (hosts, paths, classes) do;
    plain words (``startup``/``shutdown``, ``Accepted``/``Failed``, error codes) do not.
    """
    if t == WILDCARD or x == WILDCARD:
        return True
    if WILDCARD in t or WILDCARD in x:
        return (WILDCARD in t) != (WILDCARD in x)
    eq = t.find("=")
    if eq > 0 and x[: eq + 1] == t[: eq + 1]:
        return True
    return _QUALIFIED.search(t) is not None or _QUALIFIED.search(x) is not None


def compare(template: list[str], tokens: list[str]) -> tuple[int, int, list[int]]:
    """(equal constant tokens, constant tokens, positions where plain words differ)."""
    equal = 0
    nconst = 0
    words: list[int] = []
    for i, t in enumerate(template):
        x = tokens[i]
        if t == WILDCARD:
            continue
        nconst += 1
        if t == x or (t.endswith("=<*>") and x.startswith(t[:-3])):
            equal += 1
        elif i == 0 and WILDCARD not in t and WILDCARD not in x:
            words.append(i)
            words.append(i)  # the first word names the event (Drain's tree relies on it too): never merge
        elif not variable_pair(t, x):
            words.append(i)
    return equal, nconst, words
