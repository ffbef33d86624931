//! The `calculator` built-in: a small, safe arithmetic evaluator (no eval of
//! code, bounded input and nesting), so models get exact arithmetic.
//!
//! Grammar: numbers, `+ - * / % ^` (power binds tightest and is right
//! associative; `-2^2` is `-(2^2)`), parentheses, the constants `pi` and `e`
//! and the functions `sqrt abs floor ceil round ln`.

/// Longest expression accepted.
const MAX_LEN: usize = 1000;
/// Deepest nesting accepted (parentheses, unary signs, powers).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    #[error("expression is empty")]
    Empty,
    #[error("expression is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unexpected `{0}` at position {1}")]
    Unexpected(char, usize),
    #[error("unexpected end of expression")]
    UnexpectedEnd,
    #[error("unknown name `{0}`")]
    UnknownName(String),
    #[error("result is not a finite number (division by zero or overflow)")]
    NotFinite,
}

/// Evaluates `expr`.
pub fn eval(expr: &str) -> Result<f64, CalcError> {
    if expr.len() > MAX_LEN {
        return Err(CalcError::TooLong);
    }
    if expr.trim().is_empty() {
        return Err(CalcError::Empty);
    }
    let mut p = Parser {
        s: expr.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.skip_ws();
    if let Some(c) = p.peek() {
        return Err(CalcError::Unexpected(c as char, p.pos));
    }
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CalcError::NotFinite)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(CalcError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut v = self.term()?;
        loop {
            if self.eat(b'+') {
                v += self.term()?;
            } else if self.eat(b'-') {
                v -= self.term()?;
            } else {
                return Ok(v);
            }
        }
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut v = self.unary()?;
        loop {
            if self.eat(b'*') {
                v *= self.unary()?;
            } else if self.eat(b'/') {
                v /= self.unary()?;
            } else if self.eat(b'%') {
                v %= self.unary()?;
            } else {
                return Ok(v);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        self.enter()?;
        let v = if self.eat(b'-') {
            -self.unary()?
        } else if self.eat(b'+') {
            self.unary()?
        } else {
            let base = self.atom()?;
            if self.eat(b'^') {
                base.powf(self.unary()?)
            } else {
                base
            }
        };
        self.depth -= 1;
        Ok(v)
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            None => Err(CalcError::UnexpectedEnd),
            Some(b'(') => {
                self.pos += 1;
                self.enter()?;
                let v = self.expr()?;
                self.depth -= 1;
                self.close()?;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.name(),
            Some(c) => Err(CalcError::Unexpected(c as char, self.pos)),
        }
    }

    fn close(&mut self) -> Result<(), CalcError> {
        match self.peek() {
            Some(b')') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(CalcError::Unexpected(c as char, self.pos)),
            None => Err(CalcError::UnexpectedEnd),
        }
    }

    fn number(&mut self) -> Result<f64, CalcError> {
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
        {
            self.pos += 1;
        }
        // Exponent: 1e3, 2.5E-4.
        if matches!(self.s.get(self.pos), Some(b'e' | b'E'))
            && self
                .s
                .get(self.pos + 1)
                .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+')
        {
            self.pos += 2;
            while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        text.parse::<f64>()
            .map_err(|_| CalcError::Unexpected(self.s[start] as char, start))
    }

    fn name(&mut self) -> Result<f64, CalcError> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_alphanumeric) {
            self.pos += 1;
        }
        let name = String::from_utf8_lossy(&self.s[start..self.pos]).to_ascii_lowercase();
        let f: fn(f64) -> f64 = match name.as_str() {
            "pi" => return Ok(std::f64::consts::PI),
            "e" => return Ok(std::f64::consts::E),
            "sqrt" => f64::sqrt,
            "abs" => f64::abs,
            "floor" => f64::floor,
            "ceil" => f64::ceil,
            "round" => f64::round,
            "ln" => f64::ln,
            _ => return Err(CalcError::UnknownName(name)),
        };
        if !self.eat(b'(') {
            return match self.peek() {
                Some(c) => Err(CalcError::Unexpected(c as char, self.pos)),
                None => Err(CalcError::UnexpectedEnd),
            };
        }
        self.enter()?;
        let v = self.expr()?;
        self.depth -= 1;
        self.close()?;
        Ok(f(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_with_precedence() {
        assert_eq!(eval("1 + 2 * 3").unwrap(), 7.0);
        assert_eq!(eval("(1 + 2) * 3").unwrap(), 9.0);
        assert_eq!(eval("-2^2").unwrap(), -4.0);
        assert_eq!(eval("2^3^2").unwrap(), 512.0);
        assert_eq!(eval("2^-1").unwrap(), 0.5);
        assert_eq!(eval("10 % 4 - 7 / 2").unwrap(), -1.5);
        assert_eq!(eval("sqrt(16) + abs(-1) + round(2.5)").unwrap(), 8.0);
        assert_eq!(eval("1.5e2").unwrap(), 150.0);
        assert!((eval("pi").unwrap() - std::f64::consts::PI).abs() < 1e-12);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(eval(" ").unwrap_err(), CalcError::Empty);
        assert_eq!(eval("1/0").unwrap_err(), CalcError::NotFinite);
        assert_eq!(eval("1 +").unwrap_err(), CalcError::UnexpectedEnd);
        assert_eq!(eval("(1").unwrap_err(), CalcError::UnexpectedEnd);
        assert_eq!(eval("1 2").unwrap_err(), CalcError::Unexpected('2', 2));
        assert_eq!(
            eval("exit(1)").unwrap_err(),
            CalcError::UnknownName("exit".into())
        );
        assert_eq!(eval(&"(".repeat(100)).unwrap_err(), CalcError::TooDeep);
        assert_eq!(eval(&"-".repeat(100)).unwrap_err(), CalcError::TooDeep);
        assert_eq!(eval(&"1+".repeat(600)).unwrap_err(), CalcError::TooLong);
    }
}
