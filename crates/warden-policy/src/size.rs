//! Byte sizes as users write them: `512M`, `1.5GiB`, `4096`.

use std::fmt;
use std::str::FromStr;

/// A size in bytes. Suffixes are binary, as in `docker run --memory`:
/// `K`, `M`, `G`, `T` (with or without `i`, `B`, any case) multiply by 1024^n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * Self::MIB)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * Self::GIB)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a size did not parse; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a size: {reason}; write a number with an optional suffix K, M, G or T (binary, e.g. 512M, 1.5G)"
)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(split);
        if num.is_empty() {
            return Err(err("it does not start with a number"));
        }
        let shift = match suffix.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "ki" | "kib" => 10,
            "m" | "mb" | "mi" | "mib" => 20,
            "g" | "gb" | "gi" | "gib" => 30,
            "t" | "tb" | "ti" | "tib" => 40,
            _ => return Err(err("the suffix is unknown")),
        };
        let value: f64 = num.parse().map_err(|_| err("the number is malformed"))?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(err("it is too large"));
        }
        if shift == 0 && num.contains('.') {
            return Err(err("a byte count must be a whole number"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            let scale = 1u64 << shift;
            if self.0 >= scale {
                return if self.0.is_multiple_of(scale) {
                    write!(f, "{} {unit}", self.0 / scale)
                } else {
                    write!(f, "{:.1} {unit}", self.0 as f64 / scale as f64)
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("1K", 1024),
            ("1k", 1024),
            ("1KiB", 1024),
            ("512M", 512 << 20),
            ("512m", 512 << 20),
            ("512MB", 512 << 20),
            ("512 MiB", 512 << 20),
            ("1.5G", 3 << 29),
            ("2g", 2 << 30),
            ("1T", 1 << 40),
            (" 64M ", 64 << 20),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ByteSize>(), Ok(ByteSize(want)), "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for input in [
            "",
            "M",
            "-1M",
            "12X",
            "1.2.3M",
            "1.5",
            "99999999999T",
            "ten",
        ] {
            let err = input.parse::<ByteSize>().unwrap_err().to_string();
            assert!(err.contains("suffix K, M, G or T"), "{input}: {err}");
        }
    }

    #[test]
    fn displays_round_units() {
        assert_eq!(ByteSize::mib(512).to_string(), "512 MiB");
        assert_eq!(ByteSize::gib(4).to_string(), "4 GiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(12).to_string(), "12 B");
    }
}
