//! Provider keys from a mounted Secret: `--env-from DIR` reads a folder as Kubernetes mounts
//! a Secret (a file per key, its name the key), so a provider's `apiKeyEnv` finds its key
//! without the key ever being in a resource or on the command line. Variables already in
//! the environment win.

use std::path::Path;

/// Whether `name` can be an environment variable's name (letters, digits, `_`; not first a
/// digit). Kubernetes' own bookkeeping in a Secret volume (`..data`, `..2024_...`) is not.
fn is_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variables a Secret folder holds: each regular file (or link to one, as a Secret
/// volume's are) named as a variable, its content without the trailing newline.
pub fn variables(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_variable(&name) || !entry.path().is_file() {
            continue;
        }
        let value = std::fs::read_to_string(entry.path())?;
        out.push((name, value.trim_end_matches(['\n', '\r']).to_string()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_folder_gives_its_keys_as_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ANTHROPIC_API_KEY"), "sk-1\n").unwrap();
        std::fs::write(dir.path().join("..data"), "x").unwrap();
        std::fs::write(dir.path().join("not-a-name"), "x").unwrap();
        std::fs::create_dir(dir.path().join("FOLDER")).unwrap();
        assert_eq!(
            variables(dir.path()).unwrap(),
            vec![("ANTHROPIC_API_KEY".to_string(), "sk-1".to_string())]
        );
    }
}
