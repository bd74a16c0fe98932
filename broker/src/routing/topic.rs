//! The topic matcher: binding keys are dot-separated words where `*` matches exactly one word
//! and `#` matches zero or more. Bindings are stored in a trie keyed by word, with separate
//! edges for `*` and `#`, and a routing key is matched by walking the trie once (branching at
//! wildcard edges) instead of testing every binding.

use std::collections::HashMap;

use super::Destination;

#[derive(Debug, Default, Clone)]
struct Node {
    words: HashMap<String, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    /// Destinations whose binding key ends here (one entry per binding).
    destinations: Vec<Destination>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.destinations.is_empty()
    }
}

/// A trie of topic binding keys.
#[derive(Debug, Default, Clone)]
pub struct TopicTrie {
    root: Node,
}

/// RabbitMQ's split: the empty key has no words; `a..b` has three (`a`, ``, `b`).
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

impl TopicTrie {
    pub fn insert(&mut self, binding_key: &str, destination: Destination) {
        let mut node = &mut self.root;
        for w in words(binding_key) {
            node = match w {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                w => node.words.entry(w.to_string()).or_default(),
            };
        }
        node.destinations.push(destination);
    }

    /// Remove one binding of `destination` under `binding_key`; prunes emptied nodes.
    pub fn remove(&mut self, binding_key: &str, destination: &Destination) -> bool {
        fn remove_at(node: &mut Node, words: &[&str], d: &Destination) -> bool {
            let Some((first, rest)) = words.split_first() else {
                return match node.destinations.iter().position(|x| x == d) {
                    Some(i) => {
                        node.destinations.swap_remove(i);
                        true
                    }
                    None => false,
                };
            };
            match *first {
                "*" | "#" => {
                    let slot = if *first == "*" { &mut node.star } else { &mut node.hash };
                    let Some(child) = slot.as_deref_mut() else { return false };
                    let removed = remove_at(child, rest, d);
                    if child.is_empty() {
                        *slot = None;
                    }
                    removed
                }
                w => {
                    let Some(child) = node.words.get_mut(w) else { return false };
                    let removed = remove_at(child, rest, d);
                    if child.is_empty() {
                        node.words.remove(w);
                    }
                    removed
                }
            }
        }
        remove_at(&mut self.root, &words(binding_key), destination)
    }

    /// Append every destination whose binding key matches `routing_key` (duplicates possible
    /// when several bindings of one destination match; the caller deduplicates).
    pub fn matches(&self, routing_key: &str, out: &mut Vec<Destination>) {
        fn walk(node: &Node, words: &[&str], i: usize, out: &mut Vec<Destination>) {
            if let Some(hash) = &node.hash {
                // `#` swallows zero or more words.
                for j in i..=words.len() {
                    walk(hash, words, j, out);
                }
            }
            if i == words.len() {
                out.extend(node.destinations.iter().cloned());
                return;
            }
            if let Some(child) = node.words.get(words[i]) {
                walk(child, words, i + 1, out);
            }
            if let Some(star) = &node.star {
                walk(star, words, i + 1, out);
            }
        }
        walk(&self.root, &words(routing_key), 0, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.to_string())
    }

    fn matched(t: &TopicTrie, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.matches(key, &mut out);
        let mut names: Vec<String> = out.into_iter().map(|d| d.name().to_string()).collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn wildcards_match_as_rabbitmq_does() {
        let cases: &[(&str, &[(&str, bool)])] = &[
            ("a.b.c", &[("a.b.c", true), ("a.b", false), ("a.b.c.d", false), ("", false)]),
            ("a.*.c", &[("a.b.c", true), ("a..c", true), ("a.c", false), ("a.b.b.c", false)]),
            ("a.#", &[("a", true), ("a.b", true), ("a.b.c", true), ("b.a", false)]),
            ("#", &[("", true), ("a", true), ("a.b.c", true)]),
            ("*", &[("", false), ("a", true), ("a.b", false)]),
            ("#.c", &[("c", true), ("a.c", true), ("a.b.c", true), ("a.c.d", false)]),
            ("a.#.c", &[("a.c", true), ("a.b.c", true), ("a.b.x.c", true), ("a.b", false)]),
            ("*.#", &[("", false), ("a", true), ("a.b", true)]),
            ("#.*", &[("", false), ("a", true), ("a.b.c", true)]),
            ("", &[("", true), ("a", false)]),
            ("a.#.#", &[("a", true), ("a.b.c", true), ("b", false)]),
        ];
        for (binding, keys) in cases {
            let mut t = TopicTrie::default();
            t.insert(binding, q("x"));
            for (key, expect) in keys.iter() {
                assert_eq!(!matched(&t, key).is_empty(), *expect, "binding {binding:?} key {key:?}");
            }
        }
    }

    #[test]
    fn remove_prunes_and_keeps_other_bindings() {
        let mut t = TopicTrie::default();
        t.insert("a.*", q("1"));
        t.insert("a.#", q("2"));
        t.insert("a.*", q("3"));
        assert_eq!(matched(&t, "a.b"), ["1", "2", "3"]);
        assert!(t.remove("a.*", &q("1")));
        assert!(!t.remove("a.*", &q("1")));
        assert_eq!(matched(&t, "a.b"), ["2", "3"]);
        assert!(t.remove("a.*", &q("3")));
        assert!(t.remove("a.#", &q("2")));
        assert!(t.root.is_empty());
    }
}
