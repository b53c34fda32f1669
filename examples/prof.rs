//! Times the phases of loading a generated 10,000-resource company (profiling aid).
#[path = "../benches/support/generate.rs"]
mod support;
use std::time::Instant;
fn main() {
    let tree = support::generate(50, 49, 4_900, 5_000);
    phases(&tree);
    raw(&tree);
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    for _ in 0..n {
        let t = Instant::now();
        let (spec, d) = proto::spec::load(&tree);
        let t1 = t.elapsed();
        let v = proto::spec::validate(&spec);
        let t2 = t.elapsed();
        let p = proto::plan::plan(&spec, &Default::default(), chrono::Utc::now());
        let t3 = t.elapsed();
        println!(
            "load {t1:?} validate {:?} plan {:?} ({} diags, {} actions)",
            t2 - t1,
            t3 - t2,
            d.len() + v.len(),
            p.len()
        );
    }
}
#[allow(dead_code)]
fn phases(tree: &proto::spec::MemTree) {
    use proto::spec::FileTree;
    let files = tree.files().unwrap();
    let texts: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8(tree.read(f).unwrap()).unwrap())
        .collect();
    let t = Instant::now();
    let docs: Vec<_> = texts
        .iter()
        .map(|t| proto::spec::yaml::parse_documents(t).unwrap())
        .collect();
    let t1 = t.elapsed();
    let schema = proto::spec::schema::document_schema(proto::spec::Kind::Agent);
    let mut n = 0;
    for d in docs.iter().flatten() {
        n += proto::spec::shape::check(d, &schema).len();
    }
    let t2 = t.elapsed();
    let mut m = 0;
    for d in docs.iter().flatten() {
        m += d.to_json().as_object().map_or(0, |o| o.len());
    }
    let t3 = t.elapsed();
    println!(
        "parse {t1:?} shape {:?} to_json {:?} ({n} {m})",
        t2 - t1,
        t3 - t2
    );
}
#[allow(dead_code)]
pub fn raw(tree: &proto::spec::MemTree) {
    use proto::spec::FileTree;
    let files = tree.files().unwrap();
    let texts: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8(tree.read(f).unwrap()).unwrap())
        .collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let t = Instant::now();
    let mut n = 0;
    for text in &texts {
        let mut p = granit_parser::Parser::new_from_str(text);
        while let Some(e) = p.next_event() {
            e.unwrap();
            n += 1;
        }
    }
    println!("raw events {n} in {:?}, {} bytes", t.elapsed(), bytes);
}
