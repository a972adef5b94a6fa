//! FHIRPath text → [`Expr`]: a lexer and a precedence-climbing parser following the grammar of
//! FHIRPath N1 (the version FHIR R4 uses).

use rust_decimal::Decimal;

use crate::ParseError;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// An identifier at the start of a path: a member of the input, or the input's own type name.
    Identifier(String),
    /// `%name`
    Variable(String),
    This,
    Index,
    Total,
    Member(Box<Expr>, String),
    /// A function call, on an input (`a.f(x)`) or on the focus (`f(x)`).
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Indexer(Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, String),
    As(Box<Expr>, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Empty,
    Boolean(bool),
    String(String),
    Integer(i64),
    Decimal(Decimal),
    /// `@2014-01-25` (the text after `@`)
    Date(String),
    /// `@2014-01-25T14:30:14.559+01:00`
    DateTime(String),
    /// `@T14:30`
    Time(String),
    Quantity(Decimal, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Multiply,
    Divide,
    Div,
    Mod,
    Add,
    Subtract,
    Concatenate,
    Union,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    Equal,
    NotEqual,
    Equivalent,
    NotEquivalent,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    /// `` `name` ``: never a keyword
    Delimited(String),
    String(String),
    Number(String),
    DateTime(String),
    Variable(String),
    Symbol(&'static str),
}

const SYMBOLS: [&str; 22] = [
    "<=", ">=", "!=", "!~", "$this", "$index", "$total", "(", ")", "[", "]", "{", "}", ".", ",",
    "+", "-", "*", "/", "&", "|", "=",
];

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |message: &str| ParseError(message.to_owned());
    while i < chars.len() {
        let c = chars[i];
        let rest: String = chars[i..chars.len().min(i + 8)].iter().collect();
        if c.is_whitespace() {
            i += 1;
        } else if rest.starts_with("//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let end = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                .ok_or_else(|| error("unterminated comment"))?;
            i = end + 2;
        } else if c == '\'' || c == '`' {
            let (value, next) = quoted(&chars, i)?;
            tokens.push(if c == '\'' {
                Token::String(value)
            } else {
                Token::Delimited(value)
            });
            i = next;
        } else if c == '%' {
            i += 1;
            match chars.get(i) {
                Some('\'') | Some('`') => {
                    let (value, next) = quoted(&chars, i)?;
                    tokens.push(Token::Variable(value));
                    i = next;
                }
                _ => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    if start == i {
                        return Err(error("'%' without a name"));
                    }
                    tokens.push(Token::Variable(chars[start..i].iter().collect()));
                }
            }
        } else if c == '@' {
            let start = i + 1;
            i = start;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || matches!(chars[i], '-' | ':' | '+')
                    // A `.` belongs to the literal only as the seconds' fraction.
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                // After the time, `+`/`-` start a zone offset. Before it, `-` followed by a
                // digit separates date parts; otherwise both are operators (`@2014 - 1 year`).
                let in_date = !chars[start..i].contains(&'T');
                let separates =
                    chars[i] == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit);
                if matches!(chars[i], '+' | '-') && in_date && !separates {
                    break;
                }
                i += 1;
            }
            if chars.get(i) == Some(&'Z') {
                i += 1;
            }
            tokens.push(Token::DateTime(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Identifier(chars[start..i].iter().collect()));
        } else if let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            tokens.push(Token::Symbol(symbol));
            i += symbol.chars().count();
        } else if c == '<' || c == '>' || c == '~' {
            tokens.push(Token::Symbol(match c {
                '<' => "<",
                '>' => ">",
                _ => "~",
            }));
            i += 1;
        } else {
            return Err(ParseError(format!("unexpected character '{c}'")));
        }
    }
    Ok(tokens)
}

/// A quoted string or delimited identifier starting at `start`, with its escapes resolved.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), ParseError> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((value, i + 1)),
            '\\' => {
                i += 1;
                match chars.get(i) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('f') => value.push('\u{c}'),
                    Some('u') => {
                        let hex: String = chars.get(i + 1..i + 5).unwrap_or(&[]).iter().collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| ParseError("bad \\u escape".into()))?;
                        value.push(code);
                        i += 4;
                    }
                    Some(other) => value.push(*other),
                    None => break,
                }
            }
            c => value.push(c),
        }
        i += 1;
    }
    Err(ParseError("unterminated string".into()))
}

/// Parses a whole expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = lex(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.expression(0)?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(ParseError(format!("unexpected {token:?}"))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// Binary operators by the keyword or symbol, with their precedence (higher binds tighter).
fn binary(token: &Token) -> Option<(BinaryOp, u8)> {
    use BinaryOp::*;
    let name = match token {
        Token::Symbol(s) => *s,
        Token::Identifier(s) => s.as_str(),
        _ => return None,
    };
    Some(match name {
        "implies" => (Implies, 1),
        "or" => (Or, 2),
        "xor" => (Xor, 2),
        "and" => (And, 3),
        "in" => (In, 4),
        "contains" => (Contains, 4),
        "=" => (Equal, 5),
        "~" => (Equivalent, 5),
        "!=" => (NotEqual, 5),
        "!~" => (NotEquivalent, 5),
        "<" => (LessThan, 6),
        ">" => (GreaterThan, 6),
        "<=" => (LessOrEqual, 6),
        ">=" => (GreaterOrEqual, 6),
        "|" => (Union, 7),
        "+" => (Add, 9),
        "-" => (Subtract, 9),
        "&" => (Concatenate, 9),
        "*" => (Multiply, 10),
        "/" => (Divide, 10),
        "div" => (Div, 10),
        "mod" => (Mod, 10),
        _ => return None,
    })
}

const TYPE_OPERATOR_PRECEDENCE: u8 = 8;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, symbol: &str) -> Result<(), ParseError> {
        if self.eat(symbol) {
            Ok(())
        } else {
            Err(ParseError(format!(
                "expected '{symbol}', found {:?}",
                self.peek()
            )))
        }
    }

    fn expression(&mut self, min_precedence: u8) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while let Some(token) = self.peek().cloned() {
            if let Token::Identifier(word) = &token {
                if (word == "is" || word == "as") && TYPE_OPERATOR_PRECEDENCE >= min_precedence {
                    self.at += 1;
                    let type_name = self.type_specifier()?;
                    left = if word == "is" {
                        Expr::Is(Box::new(left), type_name)
                    } else {
                        Expr::As(Box::new(left), type_name)
                    };
                    continue;
                }
            }
            let Some((op, precedence)) = binary(&token) else {
                break;
            };
            if precedence < min_precedence {
                break;
            }
            self.at += 1;
            let right = self.expression(precedence + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        if self.eat("+") {
            return self.unary();
        }
        let mut expr = self.term()?;
        loop {
            if self.eat(".") {
                let name = self.identifier()?;
                if self.eat("(") {
                    let args = self.arguments()?;
                    expr = Expr::Call(Some(Box::new(expr)), name, args);
                } else {
                    expr = Expr::Member(Box::new(expr), name);
                }
            } else if self.eat("[") {
                let index = self.expression(0)?;
                self.expect("]")?;
                expr = Expr::Indexer(Box::new(expr), Box::new(index));
            } else {
                return Ok(expr);
            }
        }
    }

    fn arguments(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expression(0)?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Token::Identifier(name)) | Some(Token::Delimited(name)) => Ok(name),
            other => Err(ParseError(format!(
                "expected an identifier, found {other:?}"
            ))),
        }
    }

    fn type_specifier(&mut self) -> Result<String, ParseError> {
        let mut name = self.identifier()?;
        while self.eat(".") {
            name.push('.');
            name.push_str(&self.identifier()?);
        }
        Ok(name)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let token = self
            .next()
            .ok_or_else(|| ParseError("unexpected end of expression".into()))?;
        Ok(match token {
            Token::Symbol("(") => {
                let inner = self.expression(0)?;
                self.expect(")")?;
                inner
            }
            Token::Symbol("{") => {
                self.expect("}")?;
                Expr::Literal(Literal::Empty)
            }
            Token::Symbol("$this") => Expr::This,
            Token::Symbol("$index") => Expr::Index,
            Token::Symbol("$total") => Expr::Total,
            Token::String(s) => Expr::Literal(Literal::String(s)),
            Token::Variable(name) => Expr::Variable(name),
            Token::DateTime(text) => Expr::Literal(date_time_literal(text)?),
            Token::Number(text) => self.number(&text)?,
            Token::Delimited(name) => self.invocation(name)?,
            Token::Identifier(name) => match name.as_str() {
                "true" => Expr::Literal(Literal::Boolean(true)),
                "false" => Expr::Literal(Literal::Boolean(false)),
                _ => self.invocation(name)?,
            },
            other => return Err(ParseError(format!("unexpected {other:?}"))),
        })
    }

    fn invocation(&mut self, name: String) -> Result<Expr, ParseError> {
        if self.eat("(") {
            let args = self.arguments()?;
            Ok(Expr::Call(None, name, args))
        } else {
            Ok(Expr::Identifier(name))
        }
    }

    fn number(&mut self, text: &str) -> Result<Expr, ParseError> {
        let unit = match self.peek() {
            Some(Token::String(unit)) => Some(unit.clone()),
            Some(Token::Identifier(word)) if is_calendar_unit(word) => Some(word.clone()),
            _ => None,
        };
        if let Some(unit) = unit {
            self.at += 1;
            let value = text
                .parse::<Decimal>()
                .map_err(|e| ParseError(format!("bad number {text}: {e}")))?;
            return Ok(Expr::Literal(Literal::Quantity(value, unit)));
        }
        if text.contains('.') {
            text.parse::<Decimal>()
                .map(|d| Expr::Literal(Literal::Decimal(d)))
                .map_err(|e| ParseError(format!("bad number {text}: {e}")))
        } else {
            text.parse::<i64>()
                .map(|i| Expr::Literal(Literal::Integer(i)))
                .map_err(|e| ParseError(format!("bad integer {text}: {e}")))
        }
    }
}

pub(crate) fn is_calendar_unit(word: &str) -> bool {
    matches!(
        word,
        "year"
            | "years"
            | "month"
            | "months"
            | "week"
            | "weeks"
            | "day"
            | "days"
            | "hour"
            | "hours"
            | "minute"
            | "minutes"
            | "second"
            | "seconds"
            | "millisecond"
            | "milliseconds"
    )
}

fn date_time_literal(text: String) -> Result<Literal, ParseError> {
    if let Some(time) = text.strip_prefix('T') {
        return Ok(Literal::Time(time.to_owned()));
    }
    if text.is_empty() {
        return Err(ParseError("'@' without a date".into()));
    }
    Ok(if text.contains('T') {
        Literal::DateTime(text)
    } else {
        Literal::Date(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_invocations() {
        let parsed = parse("Patient.name.where(use = 'official').given | 1 + 2 * 3").unwrap();
        let Expr::Binary(BinaryOp::Union, left, right) = parsed else {
            panic!("union at the top: {parsed:?}");
        };
        assert!(matches!(*left, Expr::Member(_, ref name) if name == "given"));
        assert!(matches!(*right, Expr::Binary(BinaryOp::Add, _, _)));
        assert!(parse("2 + 2 /").is_err());
        assert!(parse("2 + 2 /* open").is_err());
        assert_eq!(
            parse("4 'mg'").unwrap(),
            Expr::Literal(Literal::Quantity(4.into(), "mg".into()))
        );
        assert_eq!(
            parse("@2014-01-25T14:30+01:00").unwrap(),
            Expr::Literal(Literal::DateTime("2014-01-25T14:30+01:00".into()))
        );
        assert!(matches!(
            parse("@2014 - 1 year").unwrap(),
            Expr::Binary(BinaryOp::Subtract, _, _)
        ));
        assert!(matches!(parse("a is Quantity").unwrap(), Expr::Is(_, _)));
    }
}
