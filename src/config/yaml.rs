//! Reading a YAML document node by node, with every problem recorded at its line and column
//! instead of stopping at the first: a user fixing a file sees all its mistakes at once.
//!
//! The tree (see `tree`) keeps each node's position. A `Map` remembers which keys were read,
//! so whatever is left over is an unknown field.

use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::Duration;

use super::tree::{Mapping, Node, Scalar};
use super::{Pos, Problem};

/// The problems found so far in one file.
#[derive(Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, at: Pos, field: &str, message: impl Into<String>) {
        self.0.push(Problem {
            at,
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// A value at a path such as `accounts[2].role_arn`. The path text is only made when a
/// message needs it: a file of 100,000 accounts has half a million values.
pub struct Value<'a> {
    pub node: &'a Node,
    /// The path of the mapping or list holding it.
    parent: Rc<str>,
    step: Step<'a>,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

fn join(parent: &str, step: Step) -> String {
    match step {
        Step::Root => parent.to_string(),
        Step::Key(k) if parent.is_empty() => k.to_string(),
        Step::Key(k) => format!("{parent}.{k}"),
        Step::Index(i) => format!("{parent}[{i}]"),
    }
}

impl<'a> Value<'a> {
    pub fn root(node: &'a Node) -> Self {
        Value {
            node,
            parent: Rc::from(""),
            step: Step::Root,
        }
    }

    pub fn path(&self) -> String {
        join(&self.parent, self.step)
    }

    pub fn pos(&self) -> Pos {
        self.node.at()
    }

    /// `key:` with nothing after it, or `~` / `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.node, Node::Scalar(s)
            if s.plain && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn kind(&self) -> &'static str {
        match self.node {
            Node::Scalar(_) if self.is_null() => "nothing",
            Node::Scalar(_) => "a single value",
            Node::Mapping(_) => "a mapping",
            Node::Sequence(_) => "a list",
        }
    }

    fn expected(&self, what: &str, p: &mut Problems) {
        p.add(
            self.pos(),
            &self.path(),
            format!("expected {what}, found {}", self.kind()),
        );
    }

    pub fn scalar(&self, what: &str, p: &mut Problems) -> Option<&'a Scalar> {
        match self.node {
            Node::Scalar(s) if !self.is_null() => Some(s),
            _ => {
                self.expected(what, p);
                None
            }
        }
    }

    /// A string converted by `check`, whose error text says what was expected.
    pub fn parse<T>(
        &self,
        p: &mut Problems,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.scalar("a string", p)?;
        match check(&s.text) {
            Ok(v) => Some(v),
            Err(message) => {
                p.add(self.pos(), &self.path(), message);
                None
            }
        }
    }

    pub fn string(&self, p: &mut Problems) -> Option<String> {
        self.parse(p, |s| Ok(s.to_string()))
    }

    pub fn bool(&self, p: &mut Problems) -> Option<bool> {
        let s = self.scalar("true or false", p)?;
        // YAML 1.2's core schema spellings, unquoted: `"true"` is a string.
        let b = match s.text.as_str() {
            "true" | "True" | "TRUE" if s.plain => Some(true),
            "false" | "False" | "FALSE" if s.plain => Some(false),
            _ => None,
        };
        if b.is_none() {
            p.add(
                self.pos(),
                &self.path(),
                format!("expected true or false, found {:?}", s.text),
            );
        }
        b
    }

    /// A whole number within `range`.
    pub fn number(&self, range: RangeInclusive<u32>, p: &mut Problems) -> Option<u32> {
        let s = self.scalar("a number", p)?;
        let n = s.text.parse::<u32>().ok().filter(|_| s.plain);
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                p.add(
                    self.pos(),
                    &self.path(),
                    format!(
                        "{:?} is not a whole number from {} to {}",
                        s.text,
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A duration like `90s`, `15m` or `2h`, within `range`.
    pub fn duration(&self, range: RangeInclusive<Duration>, p: &mut Problems) -> Option<Duration> {
        self.parse(p, |s| {
            let d = humantime::parse_duration(s.trim()).map_err(|_| {
                format!("invalid duration {s:?}: expected a number and a unit, like 90s, 15m or 1h")
            })?;
            if range.contains(&d) {
                Ok(d)
            } else {
                Err(format!(
                    "{s:?} is outside the allowed range {} to {}",
                    human(*range.start()),
                    human(*range.end())
                ))
            }
        })
    }

    /// The items of a list (null counts as empty), each with its path `path[i]`.
    pub fn list(&self, p: &mut Problems) -> Option<Vec<Value<'a>>> {
        if self.is_null() {
            return Some(Vec::new());
        }
        let Node::Sequence(seq) = self.node else {
            self.expected("a list", p);
            return None;
        };
        let parent: Rc<str> = Rc::from(self.path());
        Some(
            seq.items
                .iter()
                .enumerate()
                .map(|(i, node)| Value {
                    node,
                    parent: parent.clone(),
                    step: Step::Index(i),
                })
                .collect(),
        )
    }

    /// A mapping to read field by field (null counts as empty).
    pub fn map(&self, p: &mut Problems) -> Option<Map<'a>> {
        let node = if self.is_null() {
            empty_mapping()
        } else if let Node::Mapping(m) = self.node {
            m
        } else {
            self.expected("a mapping", p);
            return None;
        };
        Some(Map {
            node,
            path: Rc::from(self.path()),
            asked: Vec::new(),
        })
    }

    /// The entries of a mapping such as `labels`, in file order: each key (for its text and
    /// position) with its value.
    pub fn entries(&self, p: &mut Problems) -> Option<Vec<(&'a Scalar, Value<'a>)>> {
        let map = self.map(p)?;
        Some(
            map.node
                .entries
                .iter()
                .map(|(k, v)| {
                    let value = Value {
                        node: v,
                        parent: map.path.clone(),
                        step: Step::Key(&k.text),
                    };
                    (k, value)
                })
                .collect(),
        )
    }
}

/// A mapping read key by key; `finish` reports the keys nobody asked for.
pub struct Map<'a> {
    node: &'a Mapping,
    path: Rc<str>,
    asked: Vec<&'static str>,
}

fn empty_mapping() -> &'static Mapping {
    static EMPTY: Mapping = Mapping {
        at: Pos { line: 0, column: 0 },
        entries: Vec::new(),
    };
    &EMPTY
}

impl Map<'_> {
    /// A mapping with no keys, standing in for an absent section.
    pub fn empty() -> Self {
        Map {
            node: empty_mapping(),
            path: Rc::from(""),
            asked: Vec::new(),
        }
    }
}

impl<'a> Map<'a> {
    /// The value of `key`, if present (null counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<Value<'a>> {
        self.asked.push(key);
        let node = self.node.get(key)?;
        let value = Value {
            node,
            parent: self.path.clone(),
            step: Step::Key(key),
        };
        (!value.is_null()).then_some(value)
    }

    /// The value of `key`, which must be present: its absence is reported at the mapping.
    pub fn required(&mut self, key: &'static str, p: &mut Problems) -> Option<Value<'a>> {
        let v = self.get(key);
        if v.is_none() {
            p.add(self.pos(), &join(&self.path, Step::Key(key)), "missing");
        }
        v
    }

    /// Where the mapping starts, for problems about the mapping as a whole.
    pub fn pos(&self) -> Pos {
        self.node.at
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reports every key that was never asked for, with the nearest known name.
    pub fn finish(self, p: &mut Problems) {
        for (key, _) in &self.node.entries {
            // A handful of known names: a scan beats hashing.
            if self.asked.contains(&key.text.as_str()) {
                continue;
            }
            let mut known = self.asked.clone();
            known.sort_unstable();
            known.dedup();
            let hint = nearest(&key.text, &known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            p.add(
                key.at,
                &join(&self.path, Step::Key(&key.text)),
                format!(
                    "unknown field `{}`{hint} (expected one of {})",
                    key.text,
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

/// The known name closest to a misspelt one, if it is close enough to be a typo.
fn nearest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `1h30m` style text for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            nearest("refresh_intervall", &["refresh_interval", "concurrency"]),
            Some("refresh_interval")
        );
        assert_eq!(nearest("colour", &["labels", "name"]), None);
    }
}
