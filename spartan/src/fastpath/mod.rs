//! The kernel fast path: loading the embedded XDP program, attaching it,
//! pinning its maps, and the map writer.

mod answer_table;
pub mod device;
pub mod layout;
mod lock;
mod maps;
pub mod test_run;

pub use answer_table::AnswerTable;
pub use lock::InstanceLock;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode, links::FdLink, xdp::XdpLink},
};
pub use maps::{CounterSnapshot, KernelMaps, monotonic_ns};
use spartan_common::map_names;

/// The XDP object built from `spartan-ebpf`, embedded at build time.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SPARTAN_BPF_OBJ"));

/// The program's name in the object.
pub const PROGRAM_NAME: &str = "spartan";
/// The do-nothing program beside it, for the benchmark's floor.
pub const FLOOR_PROGRAM_NAME: &str = "spartan_floor";

const ALL_MAPS: [&str; 7] = [
    map_names::ANSWERS,
    map_names::LISTEN_ADDRS,
    map_names::INTERFACES,
    map_names::INTERFACE_SLOTS,
    map_names::HEARTBEAT,
    map_names::COUNTERS,
    map_names::PRESENCE,
];

/// How an interface got the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachedMode {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP: `lo`, or a driver without native support.
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// The loaded program with its maps pinned under `pin_dir`.
pub struct FastPath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl FastPath {
    /// Loads the embedded object to answer on `dns_port`. Maps already
    /// pinned under `pin_dir` (by an earlier daemon) are reused, so their
    /// contents survive a restart; the others are created and pinned there.
    pub fn load(pin_dir: &Path, dns_port: u16) -> Result<Self> {
        Self::load_object(BPF_OBJECT, pin_dir, dns_port)
    }

    /// Loads `object` (the embedded one, in production) as [`Self::load`] does.
    pub fn load_object(object: &[u8], pin_dir: &Path, dns_port: u16) -> Result<Self> {
        if let Some(parent) = pin_dir.parent() {
            ensure_bpffs(parent)?;
        }
        std::fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        for (name, found) in layout::remove_mismatched(pin_dir, &ALL_MAPS)? {
            tracing::warn!(
                map = %name,
                %found,
                "pinned map of another layout (an older or newer Spartan) removed; it is created anew"
            );
        }
        let mut loader = EbpfLoader::new();
        loader.override_global(spartan_common::DNS_PORT_GLOBAL, &dns_port, true);
        let pin_paths: Vec<(&str, PathBuf)> = ALL_MAPS
            .iter()
            .map(|name| (*name, pin_dir.join(name)))
            .collect();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .context("loading the XDP object (creating or reusing pinned maps)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
            .try_into()?;
        program
            .load()
            .context("loading the XDP program into the kernel (verifier)")?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
        })
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing"))?
            .try_into()?)
    }

    /// Runs one of the object's programs on `frame` with BPF_PROG_TEST_RUN,
    /// `repeat` times (the floor program is loaded on first use).
    pub fn test_run(
        &mut self,
        which: test_run::Program,
        frame: &[u8],
        repeat: u32,
    ) -> Result<test_run::TestRunOutput> {
        let program = match which {
            test_run::Program::Spartan => self.program()?,
            test_run::Program::Floor => {
                let floor: &mut Xdp = self
                    .ebpf
                    .program_mut(FLOOR_PROGRAM_NAME)
                    .ok_or_else(|| anyhow!("program {FLOOR_PROGRAM_NAME} missing"))?
                    .try_into()?;
                if floor.fd().is_err() {
                    floor.load().context("loading the floor program")?;
                }
                floor
            }
        };
        test_run::run(program, frame, repeat)
    }

    /// Handles on the maps this program uses.
    pub fn maps(&self) -> Result<KernelMaps> {
        KernelMaps::open_pinned(&self.pin_dir)
    }

    /// Where a link for `interface` is pinned.
    pub fn link_pin_path(pin_dir: &Path, interface: &str) -> PathBuf {
        pin_dir.join(format!("link_{interface}"))
    }

    /// Attaches to `interface` and pins the link, so that the program stays
    /// attached while the daemon restarts. `lo` gets generic mode (the only
    /// one it has); any other interface native mode, falling back to generic.
    /// A link pinned by an earlier daemon is updated in place to the new
    /// program: the interface is never without one.
    pub fn attach(&mut self, interface: &str) -> Result<AttachedMode> {
        let pin_path = Self::link_pin_path(&self.pin_dir, interface);
        let previous = if pin_path.exists() {
            match aya::programs::links::PinnedLink::from_pin(&pin_path) {
                Ok(pinned) => Some((pinned, previous_mode(&self.pin_dir, interface))),
                Err(e) => {
                    tracing::warn!(%interface, error = %e, "ignoring unusable pinned link");
                    let _ = std::fs::remove_file(&pin_path);
                    None
                }
            }
        } else {
            None
        };
        let policy = device::policy(interface);
        // A link an older daemon made in native mode on a veth loses answers:
        // it is not taken over but made anew in generic mode.
        let previous = previous.filter(|(_, mode)| {
            let keep = !(policy == device::Policy::Generic && *mode == Some(AttachedMode::Native));
            if !keep {
                let _ = std::fs::remove_file(&pin_path);
            }
            keep
        });
        if let Some((pinned, mode)) = previous {
            match self.replace_program(interface, pinned, &pin_path) {
                Ok(()) => {
                    self.register_interface(interface)?;
                    return Ok(mode.unwrap_or(AttachedMode::Generic));
                }
                // The device it was attached to is gone (a container's veth
                // deleted, an interface re-created): a new attach replaces it.
                Err(e) => {
                    tracing::warn!(%interface, error = format!("{e:#}"), "pinned link defunct: replaced");
                    let _ = std::fs::remove_file(&pin_path);
                }
            }
        }
        let program = self.program()?;
        let (link_id, mode) = if policy == device::Policy::Generic {
            (
                program
                    .attach(interface, XdpMode::Skb)
                    .with_context(|| format!("attaching to {interface} (generic mode)"))?,
                AttachedMode::Generic,
            )
        } else {
            match program.attach(interface, XdpMode::Driver) {
                Ok(id) => (id, AttachedMode::Native),
                Err(native_err) => {
                    let id = program.attach(interface, XdpMode::Skb).with_context(|| {
                        format!("attaching to {interface} (native mode failed: {native_err})")
                    })?;
                    (id, AttachedMode::Generic)
                }
            }
        };
        let link = program.take_link(link_id)?;
        let fd_link: FdLink = link
            .try_into()
            .context("XDP link is not a bpf_link (kernel older than 5.9?)")?;
        fd_link
            .pin(&pin_path)
            .with_context(|| format!("pinning the XDP link at {}", pin_path.display()))?;
        let note = mode_path(&self.pin_dir, interface);
        if let Some(dir) = note.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(note, mode.to_string());
        self.register_interface(interface)?;
        Ok(mode)
    }

    /// Writes `interface`'s index and hardware address to the interface map
    /// (the program answers only frames sent to that address). Called on
    /// every attach, and again when the interface changes.
    pub fn register_interface(&self, interface: &str) -> Result<()> {
        let id = device::identity(interface)
            .with_context(|| format!("reading the address of {interface}"))?;
        self.maps()?
            .write_interface(id.ifindex, id.mac, id.loopback)
            .with_context(|| format!("registering {interface} with the XDP program"))
    }

    /// Puts this program on the link pinned at `pin_path` (an earlier
    /// daemon's), so that the interface is never without one.
    fn replace_program(
        &mut self,
        interface: &str,
        pinned: aya::programs::links::PinnedLink,
        pin_path: &Path,
    ) -> Result<()> {
        let fd_link = pinned.unpin().context("unpinning the previous link")?;
        let program = self.program()?;
        let link_id = program
            .attach_to_link(XdpLink::try_from(fd_link).context("pinned link is not an XDP link")?)
            .with_context(|| format!("replacing the XDP program on {interface}"))?;
        let link = program.take_link(link_id)?;
        let fd_link: FdLink = link.try_into().context("XDP link is not a bpf_link")?;
        fd_link.pin(pin_path).context("pinning the XDP link")?;
        Ok(())
    }

    /// Detaches from `interface` by removing its pinned link.
    pub fn detach(pin_dir: &Path, interface: &str) -> Result<bool> {
        let path = Self::link_pin_path(pin_dir, interface);
        if !path.exists() {
            return Ok(false);
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let _ = std::fs::remove_file(mode_path(pin_dir, interface));
        Ok(true)
    }

    /// The interfaces with a link pinned under `pin_dir`, and the mode each
    /// was attached in (when recorded).
    pub fn attached(pin_dir: &Path) -> Vec<(String, Option<AttachedMode>)> {
        let Ok(entries) = std::fs::read_dir(pin_dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Option<AttachedMode>)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let interface = name.strip_prefix("link_")?.to_string();
                let mode = previous_mode(pin_dir, &interface);
                Some((interface, mode))
            })
            .collect();
        out.sort();
        out
    }

    /// Detaches the program from every interface it is pinned to under
    /// `pin_dir` (the maps stay): the interfaces it was on.
    pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>> {
        let Ok(entries) = std::fs::read_dir(pin_dir) else {
            return Ok(Vec::new());
        };
        let mut detached = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some(interface) = name.strip_prefix("link_")
                && Self::detach(pin_dir, interface)?
            {
                detached.push(interface.to_string());
            }
        }
        detached.sort();
        Ok(detached)
    }

    /// Removes every pin Spartan made under `pin_dir` and the directory,
    /// which detaches the program and frees the maps.
    pub fn remove_pins(pin_dir: &Path) -> Result<()> {
        if !pin_dir.exists() {
            return Ok(());
        }
        for entry in std::fs::read_dir(pin_dir)? {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
        Ok(())
    }
}

/// A file in /run/spartan that belongs with `pin_dir` (bpffs holds only BPF
/// objects): `what` and the pin directory's path in the name.
pub fn run_file(pin_dir: &Path, what: &str) -> PathBuf {
    let tag: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new("/run/spartan").join(format!("{what}{tag}"))
}

/// The attach mode is not recorded in a bpf_link; remember it beside the pin.
fn mode_path(pin_dir: &Path, interface: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}-{interface}",
        run_file(pin_dir, "xdp-mode").display()
    ))
}

fn previous_mode(pin_dir: &Path, interface: &str) -> Option<AttachedMode> {
    match std::fs::read_to_string(mode_path(pin_dir, interface))
        .ok()?
        .as_str()
    {
        "native" => Some(AttachedMode::Native),
        "generic" => Some(AttachedMode::Generic),
        _ => None,
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs on `dir` unless one is there already (systemd mounts it on
/// most hosts; minimal VMs and fresh network namespaces may not have it).
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let c_dir = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statfs fills the struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let fstype = CString::new("bpf")?;
    // SAFETY: plain mount(2) with C strings that outlive the call.
    let ret = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c_dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs on {}", dir.display()));
    }
    tracing::info!(dir = %dir.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_object_is_a_bpf_elf_with_the_program_and_btf() {
        let obj = super::BPF_OBJECT;
        assert_eq!(&obj[..4], b"\x7fELF");
        // e_machine at offset 18, little-endian: EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 247);
        let has = |needle: &[u8]| obj.windows(needle.len()).any(|w| w == needle);
        assert!(has(b".BTF"), "BTF section present");
        assert!(has(b"SPARTAN_ANSWERS"));
        assert!(has(b"xdp"));
    }
}
