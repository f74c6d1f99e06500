//! The file system under a log: one directory of segment files and small checkpoints.
//!
//! The log engine is written once against [`Directory`]. [`OsDir`] is a real directory;
//! [`MemDir`] keeps files in memory and remembers what was synced, so that a simulated crash
//! ([`MemDir::crash`]) loses exactly what a real machine could lose: unsynced bytes, and file
//! creations and removals not yet made durable by a directory sync. The simulator and the
//! crash tests run the real recovery code against it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A file opened for positional reads and writes.
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait SegmentFile: Send + Sync + 'static {
    fn len(&self) -> io::Result<u64>;
    /// Writes all of `data` at `pos`.
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `pos`; an error if the file ends first.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (fsync): needed after `set_len` shrinks a
    /// file, which fdatasync is not required to persist.
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// One log's directory.
pub trait Directory: Send + Sync + 'static {
    type File: SegmentFile;
    /// For messages: where this directory is.
    fn describe(&self) -> String;
    /// Names of the files in the directory, unsorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file, replacing any file of that name.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The whole content of a small file, or `None` if there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replaces `name` with `data` atomically and durably: write a temporary file, sync it,
    /// rename it over `name`, sync the directory. A crash leaves the old or the new content.
    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Renames `from` to `to`, replacing any file named `to`, atomically: the directory names
    /// the old or the new file, never neither. Durable only after [`Directory::sync`]. Open
    /// handles of either file keep reading the content they had (POSIX semantics).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes file creations and removals durable (fsync of the directory).
    fn sync(&self) -> io::Result<()>;
}

/// Suffix of a checkpoint being written; one left behind is the residue of a crash.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A real directory.
#[derive(Debug, Clone)]
pub struct OsDir {
    path: PathBuf,
}

impl OsDir {
    /// Uses `path`, creating it (and its parents) if missing.
    pub fn create_all(path: impl AsRef<Path>) -> io::Result<OsDir> {
        std::fs::create_dir_all(path.as_ref())?;
        Ok(OsDir {
            path: path.as_ref().to_path_buf(),
        })
    }

    /// Uses an existing directory.
    pub fn existing(path: impl AsRef<Path>) -> io::Result<OsDir> {
        let meta = std::fs::metadata(path.as_ref())?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.as_ref().display()),
            ));
        }
        Ok(OsDir {
            path: path.as_ref().to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SegmentFile for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, data, pos)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

impl Directory for OsDir {
    type File = File;

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path.join(name))
    }

    fn open(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(name))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path.join(name)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let temp = self.path.join(format!("{name}{TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        FileExt::write_all_at(&file, data, 0)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, self.path.join(name))?;
        self.sync()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// An in-memory directory that can crash. Clones share the same files.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemDirState>>,
    /// Bytes that writes may still add before the "disk" is full; `None` for unlimited.
    space_left: Arc<Mutex<Option<u64>>>,
    /// How long a file sync takes, to model a real disk in concurrency tests.
    sync_delay: Arc<Mutex<std::time::Duration>>,
}

#[derive(Default)]
struct MemDirState {
    /// What `list` and `open` see now.
    entries: BTreeMap<String, MemFile>,
    /// The entries as of the last directory sync: what survives a crash.
    durable_entries: BTreeMap<String, MemFile>,
}

/// A file of a [`MemDir`]; clones share content.
#[derive(Clone, Default)]
pub struct MemFile {
    content: Arc<Mutex<MemFileContent>>,
    space_left: Arc<Mutex<Option<u64>>>,
    sync_delay: Arc<Mutex<std::time::Duration>>,
}

#[derive(Default)]
struct MemFileContent {
    data: Vec<u8>,
    /// The content as of the last sync.
    durable: Vec<u8>,
    /// Lowest position changed since the last sync; `data.len()` when clean.
    dirty_from: usize,
}

impl MemFileContent {
    fn mark_dirty(&mut self, pos: usize) {
        self.dirty_from = self.dirty_from.min(pos);
    }
}

impl MemFile {
    fn with_data(data: Vec<u8>, dir: &MemDir) -> MemFile {
        let len = data.len();
        MemFile {
            content: Arc::new(Mutex::new(MemFileContent {
                durable: data.clone(),
                data,
                dirty_from: len,
            })),
            space_left: Arc::clone(&dir.space_left),
            sync_delay: Arc::clone(&dir.sync_delay),
        }
    }
}

impl SegmentFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.content.lock().data.len() as u64)
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let mut c = self.content.lock();
        let pos = pos as usize;
        let mut data = data;
        let mut full = false;
        if let Some(space) = self.space_left.lock().as_mut() {
            let growth = (pos + data.len()).saturating_sub(c.data.len()) as u64;
            if growth > *space {
                // Like a real file system: what fits is written, then the write fails.
                let fits = data.len() - (growth - *space) as usize;
                data = &data[..fits];
                full = true;
            }
            *space -= (pos + data.len()).saturating_sub(c.data.len()) as u64;
        }
        let end = pos + data.len();
        if c.data.len() < end {
            c.data.resize(end, 0);
        }
        c.data[pos..end].copy_from_slice(data);
        c.mark_dirty(pos);
        if full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        Ok(())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let c = self.content.lock();
        let pos = pos as usize;
        let end = pos
            .checked_add(buf.len())
            .filter(|end| *end <= c.data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"))?;
        buf.copy_from_slice(&c.data[pos..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut c = self.content.lock();
        let len = len as usize;
        if let Some(space) = self.space_left.lock().as_mut() {
            *space += c.data.len().saturating_sub(len) as u64;
        }
        c.data.resize(len, 0);
        c.mark_dirty(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = *self.sync_delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut c = self.content.lock();
        let from = c.dirty_from.min(c.durable.len());
        c.durable.truncate(from);
        let tail = c.data[from..].to_vec();
        c.durable.extend_from_slice(&tail);
        c.dirty_from = c.data.len();
        Ok(())
    }
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    /// A crash: every file goes back to its synced content, and the directory to its synced
    /// entries. `keep_unsynced(name, n)` may keep a prefix of the `n` bytes appended after the
    /// last sync (a torn write); it returns how many to keep.
    pub fn crash(&self, keep_unsynced: &mut dyn FnMut(&str, usize) -> usize) {
        let mut state = self.state.lock();
        state.entries = state.durable_entries.clone();
        for (name, file) in &state.entries {
            let mut c = file.content.lock();
            let synced = c.durable.len();
            // Only a pure append past the synced length can leave a torn tail behind.
            let appended = if c.dirty_from >= synced && c.data.len() > synced {
                c.data.len() - synced
            } else {
                0
            };
            let keep = if appended > 0 {
                keep_unsynced(name, appended).min(appended)
            } else {
                0
            };
            let mut survived = c.durable.clone();
            if keep > 0 {
                survived.extend_from_slice(&c.data[synced..synced + keep]);
            }
            c.durable = survived.clone();
            c.dirty_from = survived.len();
            c.data = survived;
        }
    }

    /// Limits how many more bytes writes may add (`None`: unlimited), to simulate a full disk.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        *self.space_left.lock() = bytes;
    }

    /// Makes every file sync take `delay`, like a real disk's fdatasync.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        *self.sync_delay.lock() = delay;
    }

    /// A crash that loses everything not synced.
    pub fn crash_clean_cut(&self) {
        self.crash(&mut |_, _| 0);
    }

    /// Flips bits of a byte in a file, in memory and in its synced content: bit rot.
    pub fn corrupt(&self, name: &str, pos: usize, xor: u8) -> bool {
        let state = self.state.lock();
        let Some(file) = state.entries.get(name) else {
            return false;
        };
        let mut c = file.content.lock();
        if pos >= c.data.len() {
            return false;
        }
        c.data[pos] ^= xor;
        if pos < c.durable.len() {
            c.durable[pos] ^= xor;
        }
        true
    }

    /// Current length of a file, for tests.
    pub fn file_len(&self, name: &str) -> Option<usize> {
        let state = self.state.lock();
        state.entries.get(name).map(|f| f.content.lock().data.len())
    }
}

impl Directory for MemDir {
    type File = MemFile;

    fn describe(&self) -> String {
        "<memory>".to_string()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().entries.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<MemFile> {
        let file = MemFile::with_data(Vec::new(), self);
        self.state
            .lock()
            .entries
            .insert(name.to_string(), file.clone());
        Ok(file)
    }

    fn open(&self, name: &str) -> io::Result<MemFile> {
        self.state
            .lock()
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.lock().entries.remove(name);
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .lock()
            .entries
            .get(name)
            .map(|f| f.content.lock().data.clone()))
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(space) = *self.space_left.lock() {
            if data.len() as u64 > space {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
        }
        let file = MemFile::with_data(data.to_vec(), self);
        state.entries.insert(name.to_string(), file.clone());
        state.durable_entries.insert(name.to_string(), file);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        // The file object moves: handles opened under either name keep their content, as an
        // open file descriptor does on a real file system.
        let file = state
            .entries
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))?;
        state.entries.insert(to.to_string(), file);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.durable_entries = state.entries.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_crash_keeps_only_what_was_synced() {
        let dir = MemDir::new();
        let a = dir.create("a").unwrap();
        a.write_at(0, b"hello").unwrap();
        dir.sync().unwrap();
        a.sync_data().unwrap();
        a.write_at(5, b" world").unwrap();
        let b = dir.create("b").unwrap();
        b.write_at(0, b"x").unwrap();
        b.sync_data().unwrap(); // synced data, but the entry itself is not durable
        dir.crash(&mut |_, n| n.min(3));
        let mut buf = [0u8; 8];
        dir.open("a").unwrap().read_at(0, &mut buf).unwrap();
        assert_eq!(
            &buf, b"hello wo",
            "a torn prefix of 3 unsynced bytes survives"
        );
        assert!(dir.open("b").is_err(), "an unsynced creation is lost");
    }

    #[test]
    fn mem_overwrite_below_synced_length_is_lost_whole() {
        let dir = MemDir::new();
        let a = dir.create("a").unwrap();
        dir.sync().unwrap();
        a.write_at(0, b"abcdef").unwrap();
        a.sync_data().unwrap();
        a.set_len(2).unwrap();
        dir.crash_clean_cut();
        assert_eq!(
            dir.file_len("a"),
            Some(6),
            "an unsynced truncation is undone"
        );
    }

    #[test]
    fn mem_rename_is_durable_only_after_a_directory_sync() {
        let dir = MemDir::new();
        let old = dir.create("a").unwrap();
        old.write_at(0, b"old").unwrap();
        old.sync_data().unwrap();
        let new = dir.create("a.swap").unwrap();
        new.write_at(0, b"new").unwrap();
        new.sync_data().unwrap();
        dir.sync().unwrap();
        dir.rename("a.swap", "a").unwrap();
        let mut buf = [0u8; 3];
        old.read_at(0, &mut buf).unwrap();
        assert_eq!(
            &buf, b"old",
            "a handle of the replaced file keeps its content"
        );
        dir.crash_clean_cut();
        assert_eq!(dir.read("a").unwrap().as_deref(), Some(&b"old"[..]));
        assert!(
            dir.read("a.swap").unwrap().is_some(),
            "the unsynced rename is undone"
        );
        dir.rename("a.swap", "a").unwrap();
        dir.sync().unwrap();
        dir.crash_clean_cut();
        assert_eq!(dir.read("a").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(dir.list().unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn os_rename_keeps_open_handles_reading_the_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OsDir::existing(tmp.path()).unwrap();
        let old = dir.create("a").unwrap();
        SegmentFile::write_at(&old, 0, b"old").unwrap();
        let new = dir.create("b").unwrap();
        SegmentFile::write_at(&new, 0, b"new").unwrap();
        dir.rename("b", "a").unwrap();
        let mut buf = [0u8; 3];
        SegmentFile::read_at(&old, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"old");
        assert_eq!(dir.read("a").unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn os_write_atomic_replaces_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OsDir::existing(tmp.path()).unwrap();
        dir.write_atomic("cp", b"1").unwrap();
        dir.write_atomic("cp", b"22").unwrap();
        assert_eq!(dir.read("cp").unwrap().as_deref(), Some(&b"22"[..]));
        assert_eq!(dir.list().unwrap(), vec!["cp".to_string()]);
    }
}
