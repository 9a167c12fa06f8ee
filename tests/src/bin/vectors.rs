//! Writes the protocol's test vectors into `docs/vectors/` (or the directory given).

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors"));
    std::fs::create_dir_all(&dir).expect("creating the vectors directory");
    for (name, text) in bsn_tests::vectors::generate() {
        std::fs::write(dir.join(name), text).expect("writing a vector file");
        println!("wrote {}", dir.join(name).display());
    }
}
