//! The policy table (docs/policy.md) as pure functions: facts in, a `Decision` out, carrying the rule
//! id that made it and a sentence a support agent can read. No I/O here; thresholds come in as
//! arguments (from configuration); every decision is stored with its rule.

pub mod account;
pub mod calendar;
pub mod dispute;
pub mod fraud;
pub mod lot;
pub mod purchase;
pub mod refund;
pub mod request;

/// Who made an automatic decision (a person's decisions name their token instead).
pub const DECIDED_BY_POLICY: &str = "creditguard";

use std::fmt;

/// Rule ids of the policy table (docs/policy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    P1,
    D1,
    M1,
    M2,
    T1,
    T2,
    U1,
    C1,
    Q1,
    L1,
    R1,
    V1,
    CB1,
    CB2,
    CB3,
    CB4,
    E1,
    O1,
    S1,
}

impl Rule {
    pub const ALL: [Rule; 19] = [
        Rule::P1,
        Rule::D1,
        Rule::M1,
        Rule::M2,
        Rule::T1,
        Rule::T2,
        Rule::U1,
        Rule::C1,
        Rule::Q1,
        Rule::L1,
        Rule::R1,
        Rule::V1,
        Rule::CB1,
        Rule::CB2,
        Rule::CB3,
        Rule::CB4,
        Rule::E1,
        Rule::O1,
        Rule::S1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::P1 => "P1",
            Rule::D1 => "D1",
            Rule::M1 => "M1",
            Rule::M2 => "M2",
            Rule::T1 => "T1",
            Rule::T2 => "T2",
            Rule::U1 => "U1",
            Rule::C1 => "C1",
            Rule::Q1 => "Q1",
            Rule::L1 => "L1",
            Rule::R1 => "R1",
            Rule::V1 => "V1",
            Rule::CB1 => "CB1",
            Rule::CB2 => "CB2",
            Rule::CB3 => "CB3",
            Rule::CB4 => "CB4",
            Rule::E1 => "E1",
            Rule::O1 => "O1",
            Rule::S1 => "S1",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown rule {s:?}"))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An automatic decision: what to do, the rule that says so, and why in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<A> {
    pub action: A,
    pub rule: Rule,
    pub explanation: String,
}
