//! The embedded example company and `proto init`: write it to a directory as a git
//! repository, with its product repositories (bare, as a forge would hold them) beside it.

use std::path::{Path, PathBuf};

use thiserror::Error;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/example_company.rs"));
}

pub use embedded::FILES;

/// Product repositories the example declares (`../<name>.git` from the company).
pub const PRODUCT_REPOS: [&str; 2] = ["hello-api.git", "docs-site.git"];

#[derive(Debug, Error)]
pub enum InitError {
    #[error("{0} already exists and is not empty; choose another directory")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// What `init` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initialized {
    /// The company repository (with a working tree).
    pub company: PathBuf,
    /// The bare product repositories.
    pub products: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the example to `dir/company` (one commit on `main`) and empty bare product
/// repositories `dir/<product>.git`. Refuses a non-empty `dir`.
pub fn init(dir: &Path) -> Result<Initialized, InitError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(InitError::NotEmpty(dir.to_path_buf()));
    }
    let company = dir.join("company");
    for (rel, content) in FILES {
        let path = company.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, content).map_err(io(&path))?;
    }
    let mut options = git2::RepositoryInitOptions::new();
    options.initial_head("main");
    let repo = git2::Repository::init_opts(&company, &options)?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let who = git2::Signature::now("proto init", "proto@localhost")?;
    repo.commit(
        Some("HEAD"),
        &who,
        &who,
        "Declare the example company",
        &tree,
        &[],
    )?;
    let mut products = Vec::new();
    for name in PRODUCT_REPOS {
        let path = dir.join(name);
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).initial_head("main");
        git2::Repository::init_opts(&path, &options)?;
        products.push(path);
    }
    Ok(Initialized { company, products })
}
