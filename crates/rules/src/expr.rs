//! The field expression language: syntax tree, parser and the errors it reports.
//!
//! ```text
//! expr     := string | call | property
//! call     := ident "(" [ expr ( "," expr )* [","] ] ")"
//! property := ident ( "." ident )*
//! ident    := [A-Za-z_][A-Za-z0-9_]*
//! string   := '"' ( char | '\"' | '\\' | '\n' | '\t' | '\r' | '\u{XXXX}' )* '"'
//! ```
//!
//! Whitespace between tokens is ignored. An identifier directly followed by `(` is a function
//! call; any other identifier path is a property reference. Spans are byte offsets into the
//! source, end exclusive.

use crate::properties;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted expression source, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest accepted nesting of function calls.
pub const MAX_NESTING: usize = 32;

/// A byte range in an expression's source (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The functions of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `coalesce(a, b, …)`: the first argument that is not empty.
    Coalesce,
    /// `join(separator, a, b, …)`: the non-empty parts (lists flattened) joined by the separator.
    Join,
    /// `first(x)`: the first item of a list; a single value unchanged.
    First,
    /// `lower(x)`: Unicode lowercase.
    Lower,
    /// `upper(x)`: Unicode uppercase.
    Upper,
    /// `trim(x)`: leading and trailing whitespace removed.
    Trim,
}

impl Function {
    /// Every function, in documentation order.
    pub const ALL: [Function; 6] = [
        Function::Coalesce,
        Function::Join,
        Function::First,
        Function::Lower,
        Function::Upper,
        Function::Trim,
    ];

    /// The function's stable name, as written in expressions.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Coalesce => "coalesce",
            Function::Join => "join",
            Function::First => "first",
            Function::Lower => "lower",
            Function::Upper => "upper",
            Function::Trim => "trim",
        }
    }

    /// Looks a function up by name (case-sensitive, like the rest of the language's keywords).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|function| function.as_str() == name)
    }

    /// How many arguments the function takes.
    pub fn arity(self) -> Arity {
        match self {
            Function::Coalesce => Arity::AtLeast(1),
            Function::Join => Arity::AtLeast(2),
            Function::First | Function::Lower | Function::Upper | Function::Trim => {
                Arity::Exactly(1)
            }
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number of arguments a function accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    fn accepts(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::AtLeast(n) => count >= n,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, n) = match self {
            Arity::Exactly(n) => ("", *n),
            Arity::AtLeast(n) => ("at least ", *n),
        };
        let noun = if n == 1 { "argument" } else { "arguments" };
        write!(f, "{prefix}{n} {noun}")
    }
}

/// A node of the syntax tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A string literal, escapes resolved. Literals are used verbatim (never trimmed).
    Literal {
        /// The literal's text.
        value: String,
        /// Where it is, quotes included.
        span: Span,
    },
    /// A property reference such as `displayName` or `onPremisesExtensionAttributes.extensionAttribute3`.
    Property {
        /// The dot-separated segments.
        path: Vec<String>,
        /// Where it is.
        span: Span,
    },
    /// A function call.
    Call {
        /// The function.
        function: Function,
        /// Its arguments.
        args: Vec<Node>,
        /// Where the function name is.
        name_span: Span,
        /// Where the whole call is, parentheses included.
        span: Span,
    },
}

impl Node {
    /// Where the node is in the source.
    pub fn span(&self) -> Span {
        match self {
            Node::Literal { span, .. } | Node::Property { span, .. } | Node::Call { span, .. } => {
                *span
            }
        }
    }

    fn visit_properties<'a>(&'a self, found: &mut Vec<(&'a [String], Span)>) {
        match self {
            Node::Literal { .. } => {}
            Node::Property { path, span } => found.push((path, *span)),
            Node::Call { args, .. } => args.iter().for_each(|arg| arg.visit_properties(found)),
        }
    }
}

/// What is wrong with an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprErrorKind {
    /// A token other than the one the grammar needs here.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows here.
        expected: &'static str,
        /// What the source has instead.
        found: String,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// A backslash escape the language does not know.
    #[error("invalid escape sequence {sequence:?}")]
    InvalidEscape {
        /// The escape as written.
        sequence: String,
    },
    /// A call to a function the language does not have.
    #[error("unknown function {name:?}")]
    UnknownFunction {
        /// The name as written.
        name: String,
    },
    /// A call with the wrong number of arguments.
    #[error("function {function:?} expects {expected}, found {found}")]
    WrongArity {
        /// The function's name.
        function: &'static str,
        /// What it accepts.
        expected: Arity,
        /// How many were given.
        found: usize,
    },
    /// A property that is neither a known Graph user property, an extension attribute nor a
    /// directory schema extension.
    #[error("unknown property {name:?}")]
    UnknownProperty {
        /// The dotted path as written.
        name: String,
    },
    /// Calls nested deeper than [`MAX_NESTING`].
    #[error("expression is nested too deeply (limit {MAX_NESTING})")]
    TooDeep,
    /// A source longer than [`MAX_EXPRESSION_LEN`] bytes.
    #[error("expression is too long ({len} bytes, limit {MAX_EXPRESSION_LEN})")]
    TooLong {
        /// The source's length in bytes.
        len: usize,
    },
}

/// An expression problem and where it is, displayed as `unknown function "cat" at 0..3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {span}")]
pub struct ExprError {
    /// What is wrong.
    pub kind: ExprErrorKind,
    /// Where.
    pub span: Span,
}

impl ExprError {
    fn new(kind: ExprErrorKind, start: usize, end: usize) -> Self {
        Self {
            kind,
            span: Span::new(start, end),
        }
    }
}

/// A parsed field expression, ready to evaluate.
///
/// Serialises as its source text. Deserialising never fails on a bad expression (stored rules
/// must always load): the problem is kept and reported by [`Expression::error`],
/// [`crate::FieldRules::validate`] and mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Expression {
    source: String,
    parsed: Result<Node, ExprError>,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expression {}

impl Expression {
    /// Parses an expression, checking its syntax, function names and argument counts.
    /// Property names are not checked here (see [`Expression::diagnose`]); evaluation accepts any.
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        let parsed = parse_node(source)?;
        Ok(Self {
            source: source.to_owned(),
            parsed: Ok(parsed),
        })
    }

    /// Parses like [`Expression::parse`] but keeps a failure inside the value instead of returning it.
    pub fn parse_lenient(source: impl Into<String>) -> Self {
        let source = source.into();
        let parsed = parse_node(&source);
        Self { source, parsed }
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree, or `None` when the source is invalid.
    pub fn ast(&self) -> Option<&Node> {
        self.parsed.as_ref().ok()
    }

    /// The parse problem, when the source is invalid.
    pub fn error(&self) -> Option<&ExprError> {
        self.parsed.as_ref().err()
    }

    /// Every problem: the parse error, else each property reference that is not a known Graph
    /// user property (see [`crate::properties`]). Extension attributes and `extension_*` names are
    /// always accepted.
    pub fn diagnose(&self) -> Vec<ExprError> {
        match &self.parsed {
            Err(error) => vec![error.clone()],
            Ok(node) => {
                let mut refs = Vec::new();
                node.visit_properties(&mut refs);
                refs.into_iter()
                    .filter(|(path, _)| !properties::is_known_path(path))
                    .map(|(path, span)| ExprError {
                        kind: ExprErrorKind::UnknownProperty {
                            name: path.join("."),
                        },
                        span,
                    })
                    .collect()
            }
        }
    }

    /// Top-level Graph property names the expression reads (for the delta `$select`); the
    /// `extensionAttributeN` shorthand reads `onPremisesExtensionAttributes`.
    pub fn referenced_properties(&self) -> Vec<String> {
        let mut refs = Vec::new();
        if let Ok(node) = &self.parsed {
            node.visit_properties(&mut refs);
        }
        refs.into_iter()
            .filter_map(|(path, _)| path.first().map(|first| (first, path.len())))
            .map(|(first, len)| properties::select_name(first, len))
            .collect()
    }
}

impl From<String> for Expression {
    fn from(source: String) -> Self {
        Self::parse_lenient(source)
    }
}

impl From<Expression> for String {
    fn from(expression: Expression) -> Self {
        expression.source
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_node(source: &str) -> Result<Node, ExprError> {
    if source.len() > MAX_EXPRESSION_LEN {
        return Err(ExprError::new(
            ExprErrorKind::TooLong { len: source.len() },
            0,
            source.len(),
        ));
    }
    let mut parser = Parser { source, pos: 0 };
    let node = parser.expr(0)?;
    parser.skip_whitespace();
    if parser.pos < source.len() {
        let (found, end) = parser.describe_next();
        return Err(ExprError::new(
            ExprErrorKind::Unexpected {
                expected: "end of expression",
                found,
            },
            parser.pos,
            end,
        ));
    }
    Ok(node)
}

struct Parser<'a> {
    source: &'a str,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.source
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn skip_whitespace(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    /// A description of the token at `pos` and where it ends, for error messages.
    fn describe_next(&self) -> (String, usize) {
        match self.peek() {
            None => ("end of expression".to_owned(), self.pos),
            Some(c) if is_ident_start(c) => {
                let end = self.ident_end(self.pos);
                (format!("identifier {:?}", &self.source[self.pos..end]), end)
            }
            Some('"') => ("a string".to_owned(), self.pos + 1),
            Some(c) => (format!("{c:?}"), self.pos + c.len_utf8()),
        }
    }

    fn ident_end(&self, start: usize) -> usize {
        self.source[start..]
            .char_indices()
            .find(|(_, c)| !is_ident_continue(*c))
            .map_or(self.source.len(), |(offset, _)| start + offset)
    }

    fn unexpected(&self, expected: &'static str) -> ExprError {
        let (found, end) = self.describe_next();
        ExprError::new(ExprErrorKind::Unexpected { expected, found }, self.pos, end)
    }

    fn expr(&mut self, depth: usize) -> Result<Node, ExprError> {
        self.skip_whitespace();
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_ident_start(c) => self.ident_expr(depth),
            _ => Err(self.unexpected("an expression")),
        }
    }

    fn string(&mut self) -> Result<Node, ExprError> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(ExprError::new(
                    ExprErrorKind::UnterminatedString,
                    start,
                    self.source.len(),
                ));
            };
            let at = self.pos;
            self.pos += c.len_utf8();
            match c {
                '"' => {
                    return Ok(Node::Literal {
                        value,
                        span: Span::new(start, self.pos),
                    });
                }
                '\\' => value.push(self.escape(at)?),
                other => value.push(other),
            }
        }
    }

    /// Reads the escape after a backslash at `at` (pos is just past the backslash).
    fn escape(&mut self, at: usize) -> Result<char, ExprError> {
        let Some(c) = self.peek() else {
            return Err(ExprError::new(
                ExprErrorKind::UnterminatedString,
                at,
                self.source.len(),
            ));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            '"' => Some('"'),
            '\\' => Some('\\'),
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            _ => None,
        };
        if let Some(resolved) = simple {
            return Ok(resolved);
        }
        let invalid = |end: usize, source: &str| {
            ExprError::new(
                ExprErrorKind::InvalidEscape {
                    sequence: source[at..end].to_owned(),
                },
                at,
                end,
            )
        };
        if c != 'u' {
            return Err(invalid(self.pos, self.source));
        }
        // \u{X..} with 1 to 6 hex digits naming a Unicode scalar value.
        if self.peek() != Some('{') {
            return Err(invalid(self.pos, self.source));
        }
        self.pos += 1;
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) && self.pos - digits_start < 6 {
            self.pos += 1;
        }
        let digits = &self.source[digits_start..self.pos];
        if self.peek() != Some('}') {
            let end = self.pos + self.peek().map_or(0, char::len_utf8);
            return Err(invalid(end, self.source));
        }
        self.pos += 1;
        u32::from_str_radix(digits, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| invalid(self.pos, self.source))
    }

    fn ident(&mut self) -> (String, Span) {
        let start = self.pos;
        let end = self.ident_end(start);
        self.pos = end;
        (self.source[start..end].to_owned(), Span::new(start, end))
    }

    fn ident_expr(&mut self, depth: usize) -> Result<Node, ExprError> {
        let (name, name_span) = self.ident();
        let after_name = self.pos;
        self.skip_whitespace();
        if self.peek() == Some('(') {
            return self.call(name, name_span, depth);
        }
        let mut path = vec![name];
        let mut end = after_name;
        while self.peek() == Some('.') {
            self.pos += 1;
            self.skip_whitespace();
            if !self.peek().is_some_and(is_ident_start) {
                return Err(self.unexpected("a property name after \".\""));
            }
            let (segment, span) = self.ident();
            path.push(segment);
            end = span.end;
            self.skip_whitespace();
        }
        // Leave trailing whitespace for the caller; the span ends at the last segment.
        Ok(Node::Property {
            path,
            span: Span::new(name_span.start, end),
        })
    }

    fn call(&mut self, name: String, name_span: Span, depth: usize) -> Result<Node, ExprError> {
        if depth >= MAX_NESTING {
            return Err(ExprError::new(
                ExprErrorKind::TooDeep,
                name_span.start,
                name_span.end,
            ));
        }
        let function = Function::from_name(&name).ok_or_else(|| {
            ExprError::new(
                ExprErrorKind::UnknownFunction { name: name.clone() },
                name_span.start,
                name_span.end,
            )
        })?;
        self.pos += 1; // "("
        let mut args = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                args.push(self.expr(depth + 1)?);
                self.skip_whitespace();
                match self.peek() {
                    Some(',') => {
                        self.pos += 1;
                        self.skip_whitespace();
                        // A trailing comma before ")" is allowed.
                        if self.peek() == Some(')') {
                            self.pos += 1;
                            break;
                        }
                    }
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.unexpected("\",\" or \")\"")),
                }
            }
        }
        let span = Span::new(name_span.start, self.pos);
        let arity = function.arity();
        if !arity.accepts(args.len()) {
            return Err(ExprError {
                kind: ExprErrorKind::WrongArity {
                    function: function.as_str(),
                    expected: arity,
                    found: args.len(),
                },
                span,
            });
        }
        Ok(Node::Call {
            function,
            args,
            name_span,
            span,
        })
    }
}

#[cfg(test)]
mod tests;
