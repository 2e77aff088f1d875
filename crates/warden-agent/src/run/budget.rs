//! A run's limits: model calls, tokens and money.

use crate::model::Usage;

/// Limits on one run (sub-agents count against their parent's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Model calls at most.
    pub max_turns: u32,
    /// Input plus output tokens at most.
    pub max_tokens: Option<u64>,
    /// US dollars at most; needs the model's price.
    pub max_cost_usd: Option<f64>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_turns: 50,
            max_tokens: None,
            max_cost_usd: None,
        }
    }
}

/// A model's list price in US dollars per million tokens: input, output, and cached input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

impl Price {
    /// `INPUT/OUTPUT` (dollars per million tokens), as `WARDEN_MODEL_PRICE` takes it.
    pub fn parse(text: &str) -> Result<Price, String> {
        let bad = || {
            format!(
                "WARDEN_MODEL_PRICE `{text}`: write INPUT/OUTPUT in US dollars per million tokens, e.g. 3/15"
            )
        };
        let (i, o) = text.split_once('/').ok_or_else(bad)?;
        let input: f64 = i.trim().parse().map_err(|_| bad())?;
        let output: f64 = o.trim().parse().map_err(|_| bad())?;
        if !(input.is_finite() && output.is_finite() && input >= 0.0 && output >= 0.0) {
            return Err(bad());
        }
        Ok(Price {
            input,
            output,
            cached_input: input,
        })
    }

    /// The list price of well-known models, by the model name's prefix.
    pub fn known(model: &str) -> Option<Price> {
        let name = model.rsplit('/').next().unwrap_or(model);
        const TABLE: &[(&str, f64, f64, f64)] = &[
            ("claude-opus-4", 15.0, 75.0, 1.5),
            ("claude-sonnet-4", 3.0, 15.0, 0.3),
            ("claude-haiku-4", 1.0, 5.0, 0.1),
            ("claude-3-5-haiku", 0.8, 4.0, 0.08),
            ("gpt-4.1-mini", 0.4, 1.6, 0.1),
            ("gpt-4.1-nano", 0.1, 0.4, 0.025),
            ("gpt-4.1", 2.0, 8.0, 0.5),
            ("gpt-4o-mini", 0.15, 0.6, 0.075),
            ("gpt-4o", 2.5, 10.0, 1.25),
            ("gpt-5-mini", 0.25, 2.0, 0.025),
            ("gpt-5", 1.25, 10.0, 0.125),
            ("gemini-2.5-pro", 1.25, 10.0, 0.31),
            ("gemini-2.5-flash", 0.3, 2.5, 0.075),
        ];
        TABLE
            .iter()
            .find(|(prefix, ..)| name.starts_with(prefix))
            .map(|&(_, input, output, cached_input)| Price {
                input,
                output,
                cached_input,
            })
    }

    /// What `usage` costs.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cache_read_tokens.unwrap_or(0).min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        (fresh as f64 * self.input
            + cached as f64 * self.cached_input
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_cost() {
        let p = Price::parse("3/15").unwrap();
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: None,
            cache_write_tokens: None,
        };
        assert!((p.cost(&u) - 4.5).abs() < 1e-9);
        assert!(Price::parse("3").unwrap_err().contains("INPUT/OUTPUT"));
        assert!(Price::parse("-1/2").is_err());
        assert_eq!(
            Price::known("anthropic/claude-sonnet-4-5").unwrap().input,
            3.0
        );
        assert_eq!(Price::known("openai/gpt-4.1-mini").unwrap().input, 0.4);
        assert!(Price::known("ollama/qwen3").is_none());
        // Cached input is charged at its own price.
        let cached = Usage {
            cache_read_tokens: Some(1_000_000),
            ..u
        };
        let known = Price::known("claude-sonnet-4-5").unwrap();
        assert!((known.cost(&cached) - (0.3 + 1.5)).abs() < 1e-9);
    }
}
