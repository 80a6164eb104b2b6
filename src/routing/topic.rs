//! The compiled trie of one topic exchange's binding patterns.
//!
//! Owns: the pattern trie and the targets bound at each pattern. It knows
//! nothing of exchanges, queues or binding arguments; the routing table keeps
//! binding identity and hands the trie one target per binding.
//!
//! Words are split on `.`, as RabbitMQ splits them: the empty key (or
//! pattern) has zero words, and every other string has one more word than it
//! has dots, so `a..b` is three words and `a.` ends with an empty word. In a
//! pattern `*` matches exactly one word and `#` matches zero or more.
//!
//! Invariants:
//! - Matching allocates nothing once the caller's [`TopicScratch`] has grown
//!   to the trie's size: it simulates the pattern automaton over a set of
//!   trie nodes, deduplicated after every word, so the work per word is
//!   bounded by the node count. Patterns like `#.#.#.#.a` cost a few states,
//!   never a backtracking explosion.
//! - A node exists only while some pattern passes through it: removing the
//!   last target of a pattern prunes its now-empty nodes, so bind/unbind
//!   churn does not grow the trie.

use super::Map;

/// Index of a node in [`TopicTrie::nodes`].
type NodeId = u32;

const ROOT: NodeId = 0;

/// Splits a routing key or pattern into words, RabbitMQ's way: the empty
/// string has no words.
pub fn words(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut split = key.split(|&b| b == b'.');
    if key.is_empty() {
        // `split` yields one empty word for the empty key; RabbitMQ sees none.
        split.next();
    }
    split
}

/// How a node hangs from its parent, so pruning can detach it.
#[derive(Debug)]
enum Edge {
    Root,
    Word(Box<[u8]>),
    Star,
    Hash,
}

#[derive(Debug)]
struct Node<T> {
    parent: NodeId,
    edge: Edge,
    words: Map<Box<[u8]>, NodeId>,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    /// One entry per binding whose pattern ends here (duplicates allowed:
    /// two bindings may differ only in their arguments).
    targets: Vec<T>,
}

impl<T> Node<T> {
    fn new(parent: NodeId, edge: Edge) -> Node<T> {
        Node {
            parent,
            edge,
            words: Map::default(),
            star: None,
            hash: None,
            targets: Vec::new(),
        }
    }

    fn is_unused(&self) -> bool {
        self.targets.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

/// Reusable state for [`TopicTrie::for_each_match`]: two node sets.
#[derive(Debug, Default)]
pub(crate) struct TopicScratch {
    current: Vec<NodeId>,
    next: Vec<NodeId>,
}

/// A trie of topic patterns, each carrying targets of type `T`.
#[derive(Debug)]
pub(crate) struct TopicTrie<T> {
    /// Arena of nodes; `nodes[0]` is the root. Freed slots are `None` and
    /// listed in `free` for reuse.
    nodes: Vec<Option<Node<T>>>,
    free: Vec<NodeId>,
}

impl<T: Copy + PartialEq> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie::new()
    }
}

impl<T: Copy + PartialEq> TopicTrie<T> {
    pub fn new() -> TopicTrie<T> {
        TopicTrie {
            nodes: vec![Some(Node::new(ROOT, Edge::Root))],
            free: Vec::new(),
        }
    }

    /// Number of live nodes, the root included.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn node(&self, id: NodeId) -> Option<&Node<T>> {
        self.nodes.get(id as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node<T>> {
        self.nodes.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn alloc(&mut self, node: Node<T>) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as NodeId
            }
        }
    }

    /// The child of `parent` along `word`, created if missing.
    fn child_or_insert(&mut self, parent: NodeId, word: &[u8]) -> NodeId {
        let existing = self.node(parent).and_then(|node| match word {
            b"*" => node.star,
            b"#" => node.hash,
            _ => node.words.get(word).copied(),
        });
        if let Some(id) = existing {
            return id;
        }
        let edge = match word {
            b"*" => Edge::Star,
            b"#" => Edge::Hash,
            _ => Edge::Word(word.into()),
        };
        let id = self.alloc(Node::new(parent, edge));
        if let Some(node) = self.node_mut(parent) {
            match word {
                b"*" => node.star = Some(id),
                b"#" => node.hash = Some(id),
                _ => {
                    node.words.insert(word.into(), id);
                }
            }
        }
        id
    }

    /// The node a pattern ends at, if the trie holds it.
    fn find(&self, pattern: &[u8]) -> Option<NodeId> {
        let mut at = ROOT;
        for word in words(pattern) {
            let node = self.node(at)?;
            at = match word {
                b"*" => node.star?,
                b"#" => node.hash?,
                _ => *node.words.get(word)?,
            };
        }
        Some(at)
    }

    pub fn insert(&mut self, pattern: &[u8], target: T) {
        let mut at = ROOT;
        for word in words(pattern) {
            at = self.child_or_insert(at, word);
        }
        if let Some(node) = self.node_mut(at) {
            node.targets.push(target);
        }
    }

    /// Removes one occurrence of `target` at `pattern`; false if absent.
    pub fn remove(&mut self, pattern: &[u8], target: T) -> bool {
        let Some(at) = self.find(pattern) else {
            return false;
        };
        let Some(node) = self.node_mut(at) else {
            return false;
        };
        let Some(index) = node.targets.iter().position(|t| *t == target) else {
            return false;
        };
        node.targets.swap_remove(index);
        self.prune(at);
        true
    }

    /// Frees `id` and its ancestors while they carry nothing.
    fn prune(&mut self, mut id: NodeId) {
        while id != ROOT {
            let Some(node) = self.node(id) else { return };
            if !node.is_unused() {
                return;
            }
            let parent = node.parent;
            let Some(Some(node)) = self.nodes.get_mut(id as usize).map(Option::take) else {
                return;
            };
            self.free.push(id);
            if let Some(up) = self.node_mut(parent) {
                match node.edge {
                    Edge::Word(word) => {
                        up.words.remove(&word);
                    }
                    Edge::Star => up.star = None,
                    Edge::Hash => up.hash = None,
                    Edge::Root => {}
                }
            }
            id = parent;
        }
    }

    /// Adds `id` and the nodes reachable from it by `#` matching zero words.
    fn push_closure(&self, mut id: NodeId, out: &mut Vec<NodeId>) {
        loop {
            out.push(id);
            match self.node(id).and_then(|node| node.hash) {
                Some(hash) => id = hash,
                None => return,
            }
        }
    }

    /// Calls `f` with the target of every binding whose pattern matches
    /// `key`, once per binding.
    pub(crate) fn for_each_match(
        &self,
        key: &[u8],
        scratch: &mut TopicScratch,
        mut f: impl FnMut(T),
    ) {
        let TopicScratch { current, next } = scratch;
        current.clear();
        self.push_closure(ROOT, current);
        for word in words(key) {
            next.clear();
            for &id in current.iter() {
                let Some(node) = self.node(id) else { continue };
                if matches!(node.edge, Edge::Hash) {
                    // `#` swallows this word and stays active.
                    self.push_closure(id, next);
                }
                if let Some(&child) = node.words.get(word) {
                    self.push_closure(child, next);
                }
                if let Some(star) = node.star {
                    self.push_closure(star, next);
                }
            }
            // Deduplicating keeps the state set no larger than the trie.
            next.sort_unstable();
            next.dedup();
            std::mem::swap(current, next);
            if current.is_empty() {
                return;
            }
        }
        for &id in current.iter() {
            if let Some(node) = self.node(id) {
                node.targets.iter().for_each(|&target| f(target));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn matches(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::new();
        trie.insert(pattern.as_bytes(), 1u32);
        let mut scratch = TopicScratch::default();
        let mut hit = false;
        trie.for_each_match(key.as_bytes(), &mut scratch, |_| hit = true);
        hit
    }

    #[test]
    fn tutorial_cases() {
        // (key, matches *.orange.*, matches *.*.rabbit, matches lazy.#)
        let cases = [
            ("quick.orange.rabbit", true, true, false),
            ("lazy.orange.elephant", true, false, true),
            ("quick.orange.fox", true, false, false),
            ("lazy.brown.fox", false, false, true),
            ("quick.brown.fox", false, false, false),
            ("quick.orange.male.rabbit", false, false, false),
            ("lazy.orange.male.rabbit", false, false, true),
            ("orange", false, false, false),
        ];
        for (key, q1, q2, q3) in cases {
            assert_eq!(matches("*.orange.*", key), q1, "*.orange.* vs {key}");
            assert_eq!(matches("*.*.rabbit", key), q2, "*.*.rabbit vs {key}");
            assert_eq!(matches("lazy.#", key), q3, "lazy.# vs {key}");
        }
    }

    #[test]
    fn hash_matches_everything_including_the_empty_key() {
        for key in ["", "a", "a.b.c", ".", "a..b"] {
            assert!(matches("#", key), "# vs {key:?}");
        }
    }

    #[test]
    fn hash_matches_zero_words() {
        assert!(matches("a.#", "a"));
        assert!(matches("#.a", "a"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(!matches("a.#", "b"));
    }

    #[test]
    fn word_counts_must_agree() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("*.dogs.*", "korea.dogs.red"));
        assert!(!matches("*.dogs.*", "korea.dogs"));
    }

    #[test]
    fn empty_words_are_words() {
        assert!(matches("", ""));
        assert!(!matches("*", ""));
        assert!(!matches("", "a"));
        assert!(matches("a.*.b", "a..b"));
        assert!(matches("a..b", "a..b"));
        assert!(!matches("a.b", "a..b"));
        assert!(matches("*.*", "."));
        assert!(matches("a.*", "a."));
        assert!(!matches("a", "a."));
    }

    #[test]
    fn many_hashes_stay_cheap() {
        let pattern = "#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.a";
        let key = vec!["x"; 64].join(".");
        assert!(!matches(pattern, &key));
        assert!(matches(pattern, &format!("{key}.a")));
    }

    #[test]
    fn removing_patterns_prunes_nodes() {
        let mut trie = TopicTrie::new();
        trie.insert(b"a.*.#.c", 1u32);
        trie.insert(b"a.b", 2u32);
        assert!(trie.remove(b"a.*.#.c", 1));
        assert!(!trie.remove(b"a.*.#.c", 1));
        assert!(trie.remove(b"a.b", 2));
        assert_eq!(trie.node_count(), 1);
    }

    /// Obviously-correct backtracking matcher, exponential but fine on
    /// the short inputs the property test feeds it.
    fn reference(pattern: &[&[u8]], key: &[&[u8]]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&b"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
            Some((&b"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference(rest, &key[1..]),
        }
    }

    fn random_text(rng: &mut StdRng, alphabet: &[&str]) -> String {
        let len = rng.gen_range(0..6);
        let words: Vec<&str> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        words.join(".")
    }

    #[test]
    fn trie_agrees_with_reference_matcher() {
        let seed: u64 = std::env::var("WARREN_TOPIC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_70b1c);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut scratch = TopicScratch::default();
        for case in 0..2_000 {
            let patterns: Vec<String> = (0..5)
                .map(|_| random_text(&mut rng, &["a", "b", "", "*", "#"]))
                .collect();
            let mut trie = TopicTrie::new();
            for (id, pattern) in patterns.iter().enumerate() {
                trie.insert(pattern.as_bytes(), id);
            }
            for _ in 0..5 {
                let key = random_text(&mut rng, &["a", "b", ""]);
                let key_words: Vec<&[u8]> = words(key.as_bytes()).collect();
                let mut got = Vec::new();
                trie.for_each_match(key.as_bytes(), &mut scratch, |id| got.push(id));
                got.sort_unstable();
                let want: Vec<usize> = (0..patterns.len())
                    .filter(|&id| {
                        let pattern_words: Vec<&[u8]> = words(patterns[id].as_bytes()).collect();
                        reference(&pattern_words, &key_words)
                    })
                    .collect();
                assert_eq!(
                    got, want,
                    "seed {seed} (set WARREN_TOPIC_SEED to replay), case {case}: \
                     patterns {patterns:?}, key {key:?}"
                );
            }
            for (id, pattern) in patterns.iter().enumerate() {
                assert!(
                    trie.remove(pattern.as_bytes(), id),
                    "seed {seed} case {case}"
                );
            }
            assert_eq!(
                trie.node_count(),
                1,
                "seed {seed} case {case}: trie not pruned"
            );
        }
    }
}
