//! A YAML document as a tree of positioned nodes, built from yaml-rust2's parser events.
//!
//! Only what a configuration needs: mappings with plain keys, lists, scalars with their text,
//! whether they were quoted, and where each starts. Anchors, aliases and tags are refused (a
//! configuration is clearer written out), as are duplicate keys and nesting deeper than
//! [`MAX_DEPTH`]. Mappings are vectors: a configuration's mappings are small, and 100,000
//! accounts make 200,000 of them.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::Pos;

#[derive(Debug)]
pub enum Node {
    Scalar(Scalar),
    Mapping(Mapping),
    Sequence(Sequence),
}

#[derive(Debug, Clone)]
pub struct Scalar {
    pub text: String,
    /// Unquoted: YAML would read it as a number, a boolean or null.
    pub plain: bool,
    pub at: Pos,
}

#[derive(Debug)]
pub struct Mapping {
    pub at: Pos,
    pub entries: Vec<(Scalar, Node)>,
}

#[derive(Debug)]
pub struct Sequence {
    pub at: Pos,
    pub items: Vec<Node>,
}

impl Node {
    pub fn at(&self) -> Pos {
        match self {
            Node::Scalar(s) => s.at,
            Node::Mapping(m) => m.at,
            Node::Sequence(s) => s.at,
        }
    }
}

impl Mapping {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }
}

/// Why a text is not a usable document: where, and what.
pub type Error = (Pos, String);

/// How deep mappings and lists may nest. The schema needs 4 levels (the file's mapping,
/// `accounts`, an entry, its `labels`); anything near this is not a configuration, and
/// 40,000 levels would take the stack of whoever walks or drops them.
pub const MAX_DEPTH: usize = 64;

/// Parses one YAML document whose top level is a mapping (an empty text is an empty one).
pub fn parse(text: &str) -> Result<Node, Error> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Event by event, not with `Parser::load`: that recurses once per level of nesting, so
    // it would overflow the stack on a deep file before any limit here could stop it.
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| (pos(e.marker()), e.info().to_string()))?;
        if matches!(event, Event::DocumentEnd | Event::StreamEnd) {
            break;
        }
        builder.on_event(event, mark);
        if let Some(e) = builder.error.take() {
            return Err(e);
        }
    }
    match builder.done {
        None => Ok(Node::Mapping(Mapping {
            at: Pos { line: 1, column: 1 },
            entries: Vec::new(),
        })),
        Some(Node::Mapping(m)) => Ok(Node::Mapping(m)),
        Some(other) => Err((other.at(), "the file must be a mapping of settings".into())),
    }
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

/// A mapping or list being built; a mapping may wait for the value of a key.
enum Frame {
    Mapping {
        map: Mapping,
        key: Option<Scalar>,
        /// Keys seen, once a mapping is large enough for a scan to be slow.
        index: Option<HashMap<String, Pos>>,
    },
    Sequence(Sequence),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    done: Option<Node>,
    error: Option<Error>,
}

impl Builder {
    fn fail(&mut self, at: Pos, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some((at, message.into()));
        }
    }

    /// Puts a finished node where it belongs: the top level, a list, or under a pending key
    /// (or, in a mapping with none pending, it is the key).
    fn place(&mut self, node: Node) {
        let error = match self.stack.last_mut() {
            None => {
                self.done = Some(node);
                None
            }
            Some(Frame::Sequence(s)) => {
                s.items.push(node);
                None
            }
            Some(Frame::Mapping { map, key, index }) => match (key.take(), node) {
                (None, Node::Scalar(k)) => {
                    let first = match index {
                        Some(ix) => ix.get(&k.text).copied(),
                        None => map
                            .entries
                            .iter()
                            .find(|(e, _)| e.text == k.text)
                            .map(|(e, _)| e.at),
                    };
                    match first {
                        Some(first) => Some((
                            k.at,
                            format!(
                                "key {:?} appears twice in the same mapping (first at line {})",
                                k.text, first.line
                            ),
                        )),
                        None => {
                            *key = Some(k);
                            None
                        }
                    }
                }
                (None, other) => Some((other.at(), "a key must be a plain name".to_string())),
                (Some(k), value) => {
                    if map.entries.len() >= 32 {
                        let ix = index.get_or_insert_with(|| {
                            map.entries
                                .iter()
                                .map(|(e, _)| (e.text.clone(), e.at))
                                .collect()
                        });
                        ix.insert(k.text.clone(), k.at);
                    }
                    map.entries.push((k, value));
                    None
                }
            },
        };
        if let Some((at, message)) = error {
            self.fail(at, message);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = pos(&mark);
        match event {
            Event::Alias(_)
            | Event::Scalar(_, _, 1.., _)
            | Event::MappingStart(1.., _)
            | Event::SequenceStart(1.., _) => self.fail(
                at,
                "anchors and aliases (&name, *name) are not supported; write the value out",
            ),
            Event::Scalar(_, _, _, Some(_))
            | Event::MappingStart(_, Some(_))
            | Event::SequenceStart(_, Some(_)) => {
                self.fail(at, "YAML tags (!name) are not supported")
            }
            Event::Scalar(text, style, _, None) => self.place(Node::Scalar(Scalar {
                text,
                plain: matches!(style, TScalarStyle::Plain),
                at,
            })),
            Event::MappingStart(..) | Event::SequenceStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.fail(
                    at,
                    format!(
                        "mappings and lists are nested more than {MAX_DEPTH} deep here; \
                         a configuration needs a few levels"
                    ),
                )
            }
            Event::MappingStart(..) => self.stack.push(Frame::Mapping {
                map: Mapping {
                    at,
                    entries: Vec::new(),
                },
                key: None,
                index: None,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Sequence(Sequence {
                at,
                items: Vec::new(),
            })),
            Event::MappingEnd | Event::SequenceEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Mapping { map, .. }) => Node::Mapping(map),
                    Some(Frame::Sequence(s)) => Node::Sequence(s),
                    None => return,
                };
                self.place(node);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_quoting_and_refusals() {
        let Node::Mapping(m) = parse("a: 1\nb: \"x\"\nc: [p, {q: r}]\n").unwrap() else {
            panic!()
        };
        let Some(Node::Scalar(a)) = m.get("a") else {
            panic!()
        };
        assert!(a.plain && a.text == "1" && a.at == Pos { line: 1, column: 4 });
        let Some(Node::Scalar(b)) = m.get("b") else {
            panic!()
        };
        assert!(!b.plain);
        assert!(matches!(m.get("c"), Some(Node::Sequence(s)) if s.items.len() == 2));
        assert!(parse("a: &x 1\nb: *x\n").unwrap_err().1.contains("anchors"));
        assert!(parse("a: !t 1\n").unwrap_err().1.contains("tags"));
        let (at, e) = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e.contains("twice") && at.line == 2, "{e}");
        assert!(parse("- 1\n").unwrap_err().1.contains("mapping"));
        assert!(matches!(parse("").unwrap(), Node::Mapping(m) if m.entries.is_empty()));
        assert!(parse("a: [\n").is_err());
        // Block and flow nesting far past the limit: an error at the level that crossed it,
        // not a stack overflow.
        let (at, e) = parse(&format!("bogus:\n{}x\n", "- ".repeat(40_000))).unwrap_err();
        assert!(e.contains("nested more than 64 deep"), "{e}");
        assert_eq!(
            at,
            Pos {
                line: 2,
                column: 127
            }
        );
        // (yaml-rust2's scanner stops deep flow nesting itself, with its own message.)
        let (at, _) = parse(&format!("a: {}", "[".repeat(100_000))).unwrap_err();
        assert_eq!(at.line, 1);
        let deepest_allowed = format!("a: {}1{}\n", "[".repeat(63), "]".repeat(63));
        assert!(parse(&deepest_allowed).is_ok());
        let many: String = (0..100).map(|i| format!("k{i}: v\n")).collect();
        assert!(parse(&format!("{many}k7: again\n"))
            .unwrap_err()
            .1
            .contains("twice"));
    }
}
