//! What the company has learned, as agents receive it: the entries under
//! `.proto/knowledge/<kind>/*.md` of the company repository, read once per revision and ranked
//! against a task's text (BM25 over stemmed words) so a session starts with the few entries
//! that bear on its work.
//!
//! An entry is markdown with optional frontmatter:
//!
//! ```text
//! ---
//! title: Release notes come from the changelog
//! tags: [release, changelog]
//! product: hello-api
//! ---
//! Write the notes from CHANGELOG.md, never from the commit log: ...
//! ```
//!
//! `product` limits an entry to that product's work. The controller writes these files, so
//! a broken one is a bug to report, not a reason to stop: it is skipped with a warning naming
//! the file.

pub mod capture;

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::yaml::{self, Node, Value};

/// Where the entries live, relative to the declaration's root.
pub const FOLDER: &str = ".proto/knowledge";
/// Larger entries are skipped: knowledge is read into every matching session.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// BM25's term-frequency saturation and length normalization, at their usual values.
const K1: f64 = 1.2;
const B: f64 = 0.75;
/// Words of the title and tags count this many times: they say what the entry is about.
const TITLE_WEIGHT: u32 = 2;
/// Entries scoring below this share of the best one are noise that happened to share a word.
const MIN_RELATIVE_SCORE: f64 = 0.2;

/// The kinds of knowledge, named by their folders.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeKind {
    TechnicalDecision,
    Learning,
    Pattern,
    BestPractice,
    LessonLearned,
}

impl KnowledgeKind {
    pub const ALL: [KnowledgeKind; 5] = [
        KnowledgeKind::TechnicalDecision,
        KnowledgeKind::Learning,
        KnowledgeKind::Pattern,
        KnowledgeKind::BestPractice,
        KnowledgeKind::LessonLearned,
    ];

    /// The folder name (`technical_decision`).
    pub fn as_str(self) -> &'static str {
        match self {
            KnowledgeKind::TechnicalDecision => "technical_decision",
            KnowledgeKind::Learning => "learning",
            KnowledgeKind::Pattern => "pattern",
            KnowledgeKind::BestPractice => "best_practice",
            KnowledgeKind::LessonLearned => "lesson_learned",
        }
    }

    pub fn from_folder(name: &str) -> Option<KnowledgeKind> {
        KnowledgeKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// From the declaration's root (`.proto/knowledge/learning/changelog.md`).
    pub path: String,
    pub kind: KnowledgeKind,
    pub title: String,
    pub tags: Vec<String>,
    /// The product the entry is limited to, if any.
    pub product: Option<String>,
    pub body: String,
    /// Stemmed words with their (weighted) counts.
    terms: BTreeMap<String, u32>,
    len: u32,
}

/// An entry with how well it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked<'a> {
    pub entry: &'a Entry,
    pub score: f64,
}

/// Every readable entry of one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Knowledge {
    entries: Vec<Entry>,
    /// In how many entries each term occurs.
    document_frequency: BTreeMap<String, u32>,
    average_len: f64,
}

impl Knowledge {
    /// Reads the entries among `files` (paths from the declaration's root, as
    /// [`crate::source::GitSource::controller_files`] gives them). Returns the knowledge and a
    /// warning per file skipped, each naming the file.
    pub fn parse(files: Vec<(String, Vec<u8>)>) -> (Knowledge, Vec<String>) {
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        for (path, bytes) in files {
            match parse_entry(&path, bytes) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(problem) => warnings.push(format!("{path}: {problem}; entry skipped")),
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut document_frequency: BTreeMap<String, u32> = BTreeMap::new();
        for entry in &entries {
            for term in entry.terms.keys() {
                *document_frequency.entry(term.clone()).or_default() += 1;
            }
        }
        let total: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
        let average_len = if entries.is_empty() {
            0.0
        } else {
            total as f64 / entries.len() as f64
        };
        (
            Knowledge {
                entries,
                document_frequency,
                average_len,
            },
            warnings,
        )
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries that bear on `text`, best first, at most `limit`: those of no product or
    /// of `product`, sharing at least one word with the text. Equal scores go by path, so the
    /// same text always gets the same entries in the same order.
    pub fn rank(&self, text: &str, product: Option<&str>, limit: usize) -> Vec<Ranked<'_>> {
        let query: BTreeSet<String> = terms(text).into_iter().collect();
        let n = self.entries.len() as f64;
        let mut ranked: Vec<Ranked<'_>> = self
            .entries
            .iter()
            .filter(|e| match (&e.product, product) {
                (None, _) => true,
                (Some(own), Some(wanted)) => own == wanted,
                (Some(_), None) => false,
            })
            .map(|entry| {
                let len = f64::from(entry.len);
                let norm = 1.0 - B + B * len / self.average_len.max(1.0);
                let score = query
                    .iter()
                    .filter_map(|t| {
                        let tf = f64::from(*entry.terms.get(t)?);
                        let df = f64::from(self.document_frequency.get(t).copied().unwrap_or(0));
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        Some(idf * tf * (K1 + 1.0) / (tf + K1 * norm))
                    })
                    .sum::<f64>();
                Ranked { entry, score }
            })
            .filter(|r| r.score > 0.0)
            .collect();
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.entry.path.cmp(&b.entry.path))
        });
        if let Some(best) = ranked.first().map(|r| r.score) {
            ranked.retain(|r| r.score >= best * MIN_RELATIVE_SCORE);
        }
        ranked.truncate(limit);
        ranked
    }
}

/// `Ok(None)` for files that are not entries at all (a `.gitkeep`, a README beside the kinds).
fn parse_entry(path: &str, bytes: Vec<u8>) -> Result<Option<Entry>, String> {
    let Some(rest) = path.strip_prefix(FOLDER).and_then(|r| r.strip_prefix('/')) else {
        return Ok(None);
    };
    if !rest.ends_with(".md") {
        return Ok(None);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let [folder, file] = parts.as_slice() else {
        return Err(format!(
            "not in a kind's folder; entries live at {FOLDER}/<kind>/<name>.md"
        ));
    };
    let kind = KnowledgeKind::from_folder(folder).ok_or_else(|| {
        let kinds: Vec<&str> = KnowledgeKind::ALL.iter().map(|k| k.as_str()).collect();
        format!(
            "unknown kind \"{folder}\"; expected one of {}",
            kinds.join(", ")
        )
    })?;
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "{} bytes; entries are limited to {MAX_ENTRY_BYTES}",
            bytes.len()
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (front, body) = split_frontmatter(text)?;
    let body = body.trim().to_string();
    if body.is_empty() {
        return Err("the entry has no text".into());
    }
    let mut title = None;
    let mut tags = Vec::new();
    let mut product = None;
    if let Some(front) = front {
        let node = yaml::parse_one(front).map_err(|e| {
            format!(
                "invalid frontmatter at line {}: {}",
                e.pos.line + 1,
                e.message
            )
        })?;
        match &node.value {
            Value::Map(_) => {}
            // An empty frontmatter block.
            Value::Null => {}
            _ => {
                return Err(format!(
                    "frontmatter must be a mapping, found {}",
                    node.type_name()
                ));
            }
        }
        title = scalar(&node, "title")?;
        product = scalar(&node, "product")?;
        tags = match node.get("tags").map(|n| &n.value) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Str(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            Some(Value::Seq(items)) => items
                .iter()
                .map(|i| match &i.value {
                    Value::Str(_) | Value::Number(_) | Value::Bool(_) => Ok(i.scalar_text()),
                    _ => Err(format!("tags: expected strings, found {}", i.type_name())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("tags: expected a list or a comma-separated string".into()),
        };
    }
    // Without a title, the first heading says what the entry is, else its file name.
    let title = title
        .or_else(|| {
            body.lines()
                .find_map(|l| l.strip_prefix("# "))
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| file.trim_end_matches(".md").replace(['-', '_'], " "));
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let about = format!("{title} {}", tags.join(" "));
    for term in terms(&about) {
        *counts.entry(term).or_default() += TITLE_WEIGHT;
    }
    for term in terms(&body) {
        *counts.entry(term).or_default() += 1;
    }
    let len = counts.values().sum();
    Ok(Some(Entry {
        path: path.to_string(),
        kind,
        title,
        tags,
        product,
        body,
        terms: counts,
        len,
    }))
}

fn scalar(node: &Node, key: &str) -> Result<Option<String>, String> {
    match node.get(key) {
        None => Ok(None),
        Some(n) => match &n.value {
            Value::Null => Ok(None),
            Value::Str(_) | Value::Number(_) | Value::Bool(_) => Ok(Some(n.scalar_text())),
            _ => Err(format!("{key}: expected a string, found {}", n.type_name())),
        },
    }
}

/// `(frontmatter, body)`; frontmatter is optional, but one that is opened must be closed.
fn split_frontmatter(text: &str) -> Result<(Option<&str>, &str), String> {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok((None, text));
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Ok((Some(&rest[..offset]), &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    Err("frontmatter is not closed by a --- line".into())
}

/// Words too common to say what a text is about.
const STOPWORDS: [&str; 70] = [
    "about", "after", "all", "also", "and", "any", "are", "been", "before", "being", "but", "can",
    "could", "did", "does", "done", "each", "for", "from", "had", "has", "have", "how", "into",
    "its", "just", "may", "more", "most", "must", "not", "now", "once", "only", "other", "our",
    "out", "over", "same", "should", "some", "such", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "through", "under", "use", "very", "was",
    "were", "what", "when", "where", "which", "while", "who", "why", "will", "with", "would",
    "you",
];

/// The significant words of a text, lowercased and stemmed, in order (with repeats):
/// words of three letters or more that are not [`STOPWORDS`]. Stemming is deliberately
/// crude — plural, `-ing`, `-ed` and a final `e` go — so that "release", "releases" and
/// "released" meet.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

fn stem(word: &str) -> String {
    let mut w = word.to_string();
    if w.len() > 4 && w.ends_with("ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.len() > 3
        && w.ends_with('s')
        && !w.ends_with("ss")
        && !w.ends_with("us")
        && !w.ends_with("is")
    {
        w.pop();
    }
    for suffix in ["ing", "ed"] {
        if w.len() >= suffix.len() + 4 && w.ends_with(suffix) {
            w.truncate(w.len() - suffix.len());
            break;
        }
    }
    if w.len() > 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> (String, Vec<u8>) {
        (path.to_string(), text.as_bytes().to_vec())
    }

    fn knowledge(files: &[(&str, &str)]) -> (Knowledge, Vec<String>) {
        Knowledge::parse(files.iter().map(|(p, t)| file(p, t)).collect())
    }

    #[test]
    fn word_forms_meet() {
        assert_eq!(terms("Releases"), terms("release"));
        assert_eq!(terms("released"), terms("releasing"));
        assert_eq!(terms("libraries"), vec!["library"]);
        assert_eq!(terms("class"), vec!["class"]);
        assert_eq!(terms("the API is ok"), vec!["api"]);
    }

    #[test]
    fn entries_read_frontmatter_headings_and_file_names() {
        let (k, warnings) = knowledge(&[
            (
                ".proto/knowledge/learning/notes.md",
                "---\ntitle: Notes come from the changelog\ntags: [release, changelog]\nproduct: app\n---\nRead CHANGELOG.md.\n",
            ),
            (
                ".proto/knowledge/pattern/retry.md",
                "# Retry with backoff\n\nDouble the delay.\n",
            ),
            (
                ".proto/knowledge/best_practice/small-commits.md",
                "Commit small.\n",
            ),
            (".proto/knowledge/learning/.gitkeep", ""),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let titles: Vec<(&str, KnowledgeKind)> = k
            .entries()
            .iter()
            .map(|e| (e.title.as_str(), e.kind))
            .collect();
        assert_eq!(
            titles,
            vec![
                ("small commits", KnowledgeKind::BestPractice),
                ("Notes come from the changelog", KnowledgeKind::Learning),
                ("Retry with backoff", KnowledgeKind::Pattern),
            ]
        );
        let notes = &k.entries()[1];
        assert_eq!(notes.tags, vec!["release", "changelog"]);
        assert_eq!(notes.product.as_deref(), Some("app"));
        assert_eq!(notes.body, "Read CHANGELOG.md.");
    }

    #[test]
    fn malformed_entries_are_skipped_with_a_warning_naming_the_file() {
        let (k, warnings) = knowledge(&[
            (".proto/knowledge/learning/open.md", "---\ntitle: x\nbody\n"),
            (
                ".proto/knowledge/learning/yaml.md",
                "---\ntitle: [unclosed\n---\nbody\n",
            ),
            (
                ".proto/knowledge/learning/tags.md",
                "---\ntags: {a: 1}\n---\nbody\n",
            ),
            (
                ".proto/knowledge/learning/empty.md",
                "---\ntitle: x\n---\n\n",
            ),
            (".proto/knowledge/gossip/rumour.md", "body\n"),
            (".proto/knowledge/loose.md", "body\n"),
            (".proto/knowledge/learning/good.md", "body\n"),
        ]);
        assert_eq!(k.entries().len(), 1);
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        for (warning, file) in warnings.iter().zip([
            "learning/open.md",
            "learning/yaml.md",
            "learning/tags.md",
            "learning/empty.md",
            "gossip/rumour.md",
            "knowledge/loose.md",
        ]) {
            assert!(
                warning.contains(file) && warning.ends_with("entry skipped"),
                "{warning}"
            );
        }
        assert!(warnings[0].contains("not closed"), "{}", warnings[0]);
        assert!(
            warnings[4].contains("unknown kind \"gossip\""),
            "{}",
            warnings[4]
        );
        let (_, warnings) = Knowledge::parse(vec![(
            ".proto/knowledge/learning/binary.md".into(),
            vec![0xff, 0xfe, 0x00],
        )]);
        assert!(warnings[0].contains("binary.md: not UTF-8"), "{warnings:?}");
    }

    #[test]
    fn ranking_prefers_the_entry_about_the_task_and_breaks_ties_by_path() {
        let (k, _) = knowledge(&[
            (
                ".proto/knowledge/learning/changelog.md",
                "---\ntitle: Release notes come from the changelog\ntags: [release]\n---\nWrite release notes from CHANGELOG.md.\n",
            ),
            (
                ".proto/knowledge/pattern/release-train.md",
                "Releases leave every Tuesday; the database is frozen the day before.\n",
            ),
            (
                ".proto/knowledge/pattern/caching.md",
                "HTTP responses carry cache headers.\n",
            ),
            (
                ".proto/knowledge/lesson_learned/b.md",
                "Migrations need a rollback plan.\n",
            ),
            (
                ".proto/knowledge/lesson_learned/a.md",
                "Migrations need a rollback plan.\n",
            ),
        ]);
        let paths = |text: &str, product: Option<&str>| -> Vec<String> {
            k.rank(text, product, 5)
                .into_iter()
                .map(|r| {
                    r.entry
                        .path
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        let release = paths(
            "Write the release notes for version 2 from the changelog",
            None,
        );
        assert_eq!(release.first().map(String::as_str), Some("changelog.md"));
        assert!(!release.contains(&"caching.md".to_string()), "{release:?}");
        // Identical entries score the same; the path decides.
        assert_eq!(paths("plan the migrations", None), vec!["a.md", "b.md"]);
        assert!(paths("zebra crossing", None).is_empty());
        assert_eq!(k.rank("release", None, 1).len(), 1);
    }

    #[test]
    fn product_entries_stay_with_their_product() {
        let (k, _) = knowledge(&[
            (
                ".proto/knowledge/learning/app.md",
                "---\nproduct: app\n---\nDeploys need the feature flag.\n",
            ),
            (
                ".proto/knowledge/learning/all.md",
                "Deploys happen on weekdays.\n",
            ),
        ]);
        let found = |product| -> Vec<String> {
            k.rank("deploy it", product, 5)
                .into_iter()
                .map(|r| r.entry.path.clone())
                .collect()
        };
        assert_eq!(found(Some("app")).len(), 2);
        assert_eq!(
            found(Some("site")),
            vec![".proto/knowledge/learning/all.md"]
        );
        assert_eq!(found(None), vec![".proto/knowledge/learning/all.md"]);
    }
}
