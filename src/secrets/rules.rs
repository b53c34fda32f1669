//! The maintained rule set: gitleaks' default rules (MIT) merged with the Kingfisher and
//! secrets-scanner rule packs, as the `secrets_scanner` crate bundles them, matched by that
//! crate's own engine (each rule's keywords, regex, secret group, entropy floor and
//! allowlists, and the global allowlist), so the rules' semantics are theirs, not ours.
//!
//! What is ours is when a rule is compiled. The crate compiles all ~1,000 regexes when a
//! scanner is built, which costs seconds; a commit scan needs only the rules whose keywords
//! occur in the text. So the bundled TOML is split once into one small ruleset per rule (the
//! rule and the global allowlist), an Aho-Corasick automaton over every rule's keywords picks
//! the candidates, and a rule's scanner is built the first time one of its keywords is seen,
//! then kept for the life of the process.

use std::collections::BTreeSet;
use std::sync::{LazyLock, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use secrets_scanner::rules::allowlist::{CompiledAllowlist, is_path_globally_allowlisted};
use secrets_scanner::{GlobalAllowlist, ScanConfig, Scanner};

/// One secret a rule matched: where it is (byte offsets into the scanned text) and which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hit {
    pub start: usize,
    pub end: usize,
    pub rule: String,
    pub description: String,
}

/// One rule of the bundled set, compiled on first use.
struct Rule {
    id: String,
    description: String,
    /// The rule alone (with the global allowlist) as a ruleset the crate reads, its regex
    /// matching bytes as ASCII (see [`ascii`]).
    toml: String,
    /// The rule as bundled, for a regex that does not compile as ASCII.
    bundled: String,
    scanner: OnceLock<Option<Scanner>>,
}

impl Rule {
    fn scanner(&self) -> Option<&Scanner> {
        self.scanner
            .get_or_init(|| {
                let scanner = Scanner::from_toml(&self.toml).or_else(|ascii| {
                    tracing::debug!(rule = %self.id, "compiled as bundled, not as ASCII: {ascii}");
                    Scanner::from_toml(&self.bundled)
                });
                match scanner {
                    // The hardened preset: inline `gitleaks:allow` markers are ignored (the
                    // text scanned is an agent's, which must not be able to wave its own
                    // secret through), no context lines are kept, findings carry no secret
                    // text.
                    Ok(scanner) => Some(scanner.with_config(ScanConfig::proxy())),
                    Err(e) => {
                        tracing::warn!(rule = %self.id, "secret rule skipped: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// A rule's regex with Unicode classes off (`(?-u:...)`, a group that captures nothing, so
/// the rule's secret group keeps its number). Secrets are ASCII; with Unicode on, each
/// `\w`, `\s` or `\b` of a thousand rules compiles into automata for every script, which
/// made the compiled rules the largest thing a controller held (about 43 MB of a 110 MB
/// peak at 10,000 resources) and sent matching to the slowest engine (a Unicode word
/// boundary stops the regex crate's DFAs on any non-ASCII text). A regex that needs Unicode
/// (`\p{..}`) does not compile this way and keeps its bundled form.
fn ascii(rule: &toml::Value) -> toml::Value {
    let mut rule = rule.clone();
    if let Some(table) = rule.as_table_mut()
        && let Some(regex) = table.get("regex").and_then(toml::Value::as_str)
    {
        let wrapped = format!("(?-u:{regex})");
        table.insert("regex".into(), toml::Value::String(wrapped));
    }
    rule
}

struct RuleSet {
    rules: Vec<Rule>,
    /// The ruleset's global allowlist, compiled once here rather than into every rule's
    /// scanner (it was a third of the memory the compiled rules took); `None` when it is
    /// one this module cannot apply itself, and each rule then carries it.
    allowlist: Option<Allowlist>,
    keywords: Option<AhoCorasick>,
    /// For each keyword of `keywords`, the rules it makes candidates.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: candidates for every text.
    always: Vec<usize>,
}

static RULES: LazyLock<RuleSet> = LazyLock::new(load);

/// Splits the bundled ruleset into one ruleset per rule. The bundled TOML is part of the
/// crate and checked by its own build, so a rule that does not read is skipped with a
/// warning rather than stopping every commit.
fn load() -> RuleSet {
    let table: toml::Table = match toml::from_str(secrets_scanner::rules::BUNDLED_RULES) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("the bundled secret rules do not read: {e}");
            toml::Table::new()
        }
    };
    let global = table.get("allowlist").cloned();
    let allowlist = global.as_ref().and_then(Allowlist::compile);
    // Carried by each rule only when it could not be compiled once.
    let carried = global.filter(|_| allowlist.is_none());
    let mut rules = Vec::new();
    let mut keywords: Vec<String> = Vec::new();
    let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
    let mut always = Vec::new();
    let entries = table
        .get("rules")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in entries {
        let Some(rule) = entry.as_table() else {
            continue;
        };
        let id = rule
            .get("id")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let description = rule
            .get("description")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut one = toml::Table::new();
        one.insert("title".into(), toml::Value::String(id.clone()));
        if let Some(carried) = &carried {
            one.insert("allowlist".into(), carried.clone());
        }
        one.insert("rules".into(), toml::Value::Array(vec![entry.clone()]));
        let Ok(bundled) = toml::to_string(&one) else {
            tracing::warn!(rule = %id, "secret rule skipped: cannot be written back as TOML");
            continue;
        };
        one.insert("rules".into(), toml::Value::Array(vec![ascii(&entry)]));
        let text = toml::to_string(&one).unwrap_or_else(|_| bundled.clone());
        let index = rules.len();
        let words: BTreeSet<String> = rule
            .get("keywords")
            .and_then(toml::Value::as_array)
            .map(|words| {
                words
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_lowercase)
                    .filter(|w| !w.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if words.is_empty() {
            always.push(index);
        }
        for word in words {
            match keywords.iter().position(|k| *k == word) {
                Some(at) => keyword_rules[at].push(index),
                None => {
                    keywords.push(word);
                    keyword_rules.push(vec![index]);
                }
            }
        }
        rules.push(Rule {
            id,
            description,
            toml: text,
            bundled,
            scanner: OnceLock::new(),
        });
    }
    let automaton = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(&keywords);
    let keywords = match automaton {
        Ok(a) => Some(a),
        Err(e) => {
            // Only the keyworded rules are lost; a commit is still scanned by the others
            // and by the entropy check.
            tracing::error!("the secret rules' keywords cannot be indexed: {e}");
            None
        }
    };
    RuleSet {
        rules,
        allowlist,
        keywords,
        keyword_rules,
        always,
    }
}

/// Every secret the rules find in `text`; `path` is the file it comes from (some rules and
/// allowlists look at the path: lock files and images are not scanned).
pub(super) fn hits(path: &str, text: &str) -> Vec<Hit> {
    let set = &*RULES;
    if set.allowlist.as_ref().is_some_and(|a| a.path(path)) {
        return Vec::new();
    }
    let mut candidates: BTreeSet<usize> = set.always.iter().copied().collect();
    for found in set
        .keywords
        .iter()
        .flat_map(|k| k.find_overlapping_iter(text))
    {
        if let Some(rules) = set.keyword_rules.get(found.pattern().as_usize()) {
            candidates.extend(rules.iter().copied());
        }
    }
    let mut hits = Vec::new();
    for index in candidates {
        let Some(rule) = set.rules.get(index) else {
            continue;
        };
        let Some(scanner) = rule.scanner() else {
            continue;
        };
        for finding in scanner.scan_content(path, text) {
            let (start, end) = if finding.secret_start_offset < finding.secret_end_offset {
                (finding.secret_start_offset, finding.secret_end_offset)
            } else {
                (finding.start_offset, finding.end_offset)
            };
            // A path-only rule matches the file's name, not a span of its text.
            if start >= end || end > text.len() {
                continue;
            }
            if let Some(allowlist) = &set.allowlist {
                let matched = text
                    .get(finding.start_offset..finding.end_offset)
                    .unwrap_or_default();
                let before = text.get(..start).unwrap_or_default();
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let after = text.get(end..).unwrap_or_default();
                let line_end = after.find('\n').map_or(text.len(), |i| end + i);
                let line = text.get(line_start..line_end).unwrap_or_default();
                let secret = text.get(start..end).unwrap_or_default();
                if allowlist.finding(path, line, matched, secret) {
                    continue;
                }
            }
            hits.push(Hit {
                start,
                end,
                rule: rule.id.clone(),
                description: rule.description.clone(),
            });
        }
    }
    hits
}

/// The ruleset's global allowlist, compiled once by the crate's own code and applied as
/// the crate applies it (a file whose path it allows is not scanned; a finding it allows is
/// dropped).
struct Allowlist(CompiledAllowlist);

impl Allowlist {
    fn compile(value: &toml::Value) -> Option<Allowlist> {
        match value.clone().try_into::<GlobalAllowlist>() {
            Ok(config) => Some(Allowlist(CompiledAllowlist::compile_global_allowlist(
                &config,
            ))),
            Err(e) => {
                tracing::warn!("the secret rules' allowlist is left to each rule: {e}");
                None
            }
        }
    }

    fn path(&self, path: &str) -> bool {
        is_path_globally_allowlisted(std::slice::from_ref(&self.0), path)
    }

    /// Whether the finding `matched` (with `secret` inside it, on `line`) is allowed.
    fn finding(&self, path: &str, line: &str, matched: &str, secret: &str) -> bool {
        self.0
            .evaluate(path, line.as_bytes(), matched.as_bytes(), secret.as_bytes())
    }
}

/// How many rules the set holds (for the module's tests and its documentation).
#[cfg(test)]
pub(super) fn count() -> usize {
    RULES.rules.len()
}

/// Whether the global allowlist is applied here, once, rather than by every rule.
#[cfg(test)]
pub(super) fn allowlist_compiled_once() -> bool {
    RULES.allowlist.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bundled rule compiles, nearly all of them as ASCII; a regex that needs Unicode
    /// keeps its bundled form rather than being lost.
    #[test]
    fn every_rule_compiles_and_nearly_all_as_ascii() {
        let set = &*RULES;
        let mut as_bundled = Vec::new();
        for rule in &set.rules {
            if Scanner::from_toml(&rule.toml).is_err() {
                assert!(
                    Scanner::from_toml(&rule.bundled).is_ok(),
                    "{} compiles in neither form",
                    rule.id
                );
                as_bundled.push(rule.id.clone());
            }
            assert!(rule.scanner().is_some(), "{} was skipped", rule.id);
        }
        assert!(
            as_bundled.len() * 20 < set.rules.len(),
            "{} of {} rules need Unicode: {as_bundled:?}",
            as_bundled.len(),
            set.rules.len()
        );
    }
}
