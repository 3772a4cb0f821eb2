fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new("/sys/fs/bpf/spartan-try");
    let mut fp = spartan::fastpath::FastPath::load(dir)?;
    println!("loaded; fd ok: {}", fp.program_fd().is_ok());
    spartan::fastpath::FastPath::remove_pins(dir)?;
    Ok(())
}
