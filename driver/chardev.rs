// SPDX-License-Identifier: GPL-2.0

//! The character devices `/dev/acqN` and `/dev/acqN-out`: our own `file_operations`
//! (the Rust miscdevice abstraction has no poll() or splice in 7.3), thin trampolines
//! into [`Card`].

use super::*;
use kernel::iov::IovIterSource;

impl CharDev {
    /// `/dev/acqN` (capture, `out` false) or `/dev/acqN-out` (playback).
    pub(crate) fn new(card: Arc<Card>, out: bool) -> Result<impl PinInit<Self, Error>> {
        let name = if out {
            CString::try_from_fmt(fmt!("acq{}-out", card.index))?
        } else {
            CString::try_from_fmt(fmt!("acq{}", card.index))?
        };
        let fops: &'static bindings::file_operations = if out { &PB_FOPS.0 } else { &ACQ_FOPS.0 };
        let name_ptr = name.as_char_ptr();
        Ok(try_pin_init!(Self {
            card,
            name,
            misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: `slot` is valid for writes; an all-zero miscdevice is valid.
                unsafe {
                    slot.write(pin_init::zeroed());
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                    (*slot).name = name_ptr;
                    (*slot).fops = fops;
                    (*slot).mode = 0o600;
                }
                // SAFETY: the miscdevice is initialised; it is pinned and deregistered in
                // `drop` before its memory goes away. `name` (a heap string owned by
                // `Self`) outlives the registration.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        }? Error))
    }
}

// SAFETY: the miscdevice is only touched by the misc core (under its own lock) and by
// `drop`; `CharDev` has no `&self` methods that access it.
unsafe impl Send for CharDev {}
// SAFETY: as above.
unsafe impl Sync for CharDev {}

#[pinned_drop]
impl PinnedDrop for CharDev {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered (type invariant); deregistered exactly once.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

/// Our `file_operations`; an immutable table of function pointers.
pub(crate) struct Fops(pub(crate) bindings::file_operations);
// SAFETY: the table is never modified; the kernel only reads it.
unsafe impl Sync for Fops {}

pub(crate) static ACQ_FOPS: Fops = Fops(bindings::file_operations {
    owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
    open: Some(fop_open::<Capture>),
    release: Some(fop_release::<Capture>),
    read_iter: Some(fop_read_iter),
    splice_read: Some(fop_splice_read),
    mmap: Some(fop_mmap),
    poll: Some(fop_poll::<Capture>),
    unlocked_ioctl: Some(fop_ioctl::<Capture>),
    llseek: Some(bindings::noop_llseek),
    ..pin_init::zeroed()
});

/// The card of an open file.
///
/// # Safety
///
/// `file` must be a file of ours between a successful `fop_open` and `fop_release`.
pub(crate) unsafe fn file_card<'a>(
    file: *mut bindings::file,
) -> <Arc<Card> as ForeignOwnable>::Borrowed<'a> {
    // SAFETY: `fop_open` stored an `Arc<Card>` with `into_foreign`; `fop_release` has not
    // reclaimed it yet (caller's guarantee).
    unsafe { <Arc<Card> as ForeignOwnable>::borrow((*file).private_data) }
}

/// The card of a `CharDev` being opened.
///
/// # Safety
///
/// `file` must be a file being opened through one of our misc devices (its
/// `private_data` is the `struct miscdevice`), called from the device's `open`.
pub(crate) unsafe fn chardev_card(file: *mut bindings::file) -> Arc<Card> {
    // SAFETY: `misc_open` set `private_data` to our `struct miscdevice` and holds the misc
    // lock during this call, so the `CharDev` containing it cannot be deregistered and freed.
    let chardev = unsafe {
        let misc = (*file).private_data.cast::<Opaque<bindings::miscdevice>>();
        &*misc
            .cast::<u8>()
            .sub(core::mem::offset_of!(CharDev, misc))
            .cast::<CharDev>()
    };
    chardev.card.clone()
}

/// What differs between the card's two device files behind the file operations they
/// share the shape of (open, release, poll, ioctl): the trampolines below are generic
/// over it, so each exists once.
pub(crate) trait Node {
    /// A file is being opened (one opener at a time).
    fn open(card: &Card) -> Result;
    /// The last reference to the open file is gone.
    fn release(card: &Card);
    fn poll(card: &Card, file: &File, table: &PollTable<'_>) -> c_uint;
    fn ioctl(card: &Card, cmd: u32, arg: usize) -> Result<isize>;
}

/// `/dev/acqN`: capture.
pub(crate) struct Capture;
/// `/dev/acqN-out`: playback.
pub(crate) struct Playback;

impl Node for Capture {
    fn open(card: &Card) -> Result {
        card.open()
    }
    fn release(card: &Card) {
        card.release();
    }
    fn poll(card: &Card, file: &File, table: &PollTable<'_>) -> c_uint {
        card.poll(file, table)
    }
    fn ioctl(card: &Card, cmd: u32, arg: usize) -> Result<isize> {
        card.ioctl(cmd, arg)
    }
}

impl Node for Playback {
    fn open(card: &Card) -> Result {
        card.pb_open()
    }
    fn release(card: &Card) {
        card.pb_release();
    }
    fn poll(card: &Card, file: &File, table: &PollTable<'_>) -> c_uint {
        card.pb_poll(file, table)
    }
    fn ioctl(card: &Card, cmd: u32, arg: usize) -> Result<isize> {
        card.pb_ioctl(cmd, arg)
    }
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_open<N: Node>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: called by the misc core for our device during open.
    let card = unsafe { chardev_card(file) };
    if let Err(e) = N::open(&card) {
        return e.to_errno();
    }
    // SAFETY: we own `file` during open; from now on `private_data` is our `Arc<Card>`,
    // reclaimed in `fop_release`.
    unsafe { (*file).private_data = card.into_foreign() };
    // SAFETY: `file` is being opened by us (valid for the call).
    unsafe { mark_stream(file) };
    // SAFETY: as above.
    unsafe { mark_nowait(file) };
    0
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_release<N: Node>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` holds the `Arc<Card>` stored by `fop_open`; release is the
    // last call for this file, so ownership is taken back exactly once.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::from_foreign((*file).private_data) };
    N::release(&card);
    0
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_poll<N: Node>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: `table` is null or a valid poll table for the duration of the call.
    let table = unsafe { PollTable::from_raw(table) };
    // SAFETY: `file` is valid for the duration of the call.
    let f = unsafe { File::from_raw_file(file) };
    N::poll(&card, f, &table)
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_ioctl<N: Node>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    match N::ioctl(&card, cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// Makes an opening file a stream (`stream_open`, the kernel's convention for a file
/// without positions, like a pipe or an evdev node): pread()/pwrite(), lseek() and
/// sendfile() with an explicit offset fail with `ESPIPE`, splice() with one with `EINVAL`,
/// and sendfile() from the capture file into a file or socket with `EINVAL` (no direct
/// splice from a stream: it would drop what the destination does not take). `f_pos`
/// moves only with splice() and sendfile() without an offset.
///
/// # Safety
///
/// `file` must be a file being opened (valid, not yet visible to other calls).
pub(crate) unsafe fn mark_stream(file: *mut bindings::file) {
    // SAFETY: the caller passes a valid file during open; `stream_open` only changes its
    // mode bits and never fails.
    unsafe { bindings::stream_open(ptr::null_mut(), file) };
}

/// Declares that the file's `->read_iter` and `->write_iter` honour `IOCB_NOWAIT`
/// (`iocb_card`: such a call is non-blocking, EAGAIN instead of a wait), as pipes and
/// /dev/zero do: `preadv2()`/`pwritev2()` with `RWF_NOWAIT` then work on a blocking
/// descriptor, and io_uring tries a ready file inline before it falls back to a worker.
///
/// # Safety
///
/// `file` must be a file being opened (valid, not yet visible to other calls).
unsafe fn mark_nowait(file: *mut bindings::file) {
    // SAFETY: the caller passes a valid file during open, which nobody else sees yet, so
    // the plain read-modify-write of its mode races with nothing.
    unsafe { (*file).f_mode |= FMODE_NOWAIT };
}

/// The card of a `->read_iter`/`->write_iter` call, and whether the call must not block:
/// the file is O_NONBLOCK, or the kiocb carries IOCB_NOWAIT (io_uring's inline attempt).
///
/// # Safety
///
/// `iocb` must be the kiocb the VFS passed to one of our iter operations, for an open
/// file of ours, valid for the call.
unsafe fn iocb_card<'a>(
    iocb: *mut bindings::kiocb,
) -> (<Arc<Card> as ForeignOwnable>::Borrowed<'a>, bool) {
    // SAFETY: the kiocb is valid for the call (caller's guarantee).
    let (file, ki_flags) = unsafe { ((*iocb).ki_filp, (*iocb).ki_flags) };
    // SAFETY: `file` is an open file of ours (caller's guarantee).
    let card = unsafe { file_card(file) };
    // SAFETY: `file` is valid for the duration of the call.
    let flags = unsafe { File::from_raw_file(file) }.flags();
    let nonblock = flags & file::flags::O_NONBLOCK != 0 || ki_flags & IOCB_NOWAIT != 0;
    (card, nonblock)
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_read_iter(
    iocb: *mut bindings::kiocb,
    to: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: forwarded from the caller (a VFS call for an open file of ours).
    let (card, nonblock) = unsafe { iocb_card(iocb) };
    // SAFETY: a read_iter destination is a valid `ITER_DEST` iov_iter, used only by this
    // call, that may be written with the standard iov_iter methods during the call.
    let to = unsafe { IovIterDest::from_raw(to) };
    match card.read(nonblock, to) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_splice_read(
    file: *mut bindings::file,
    _ppos: *mut bindings::loff_t,
    pipe: *mut bindings::pipe_inode_info,
    len: usize,
    flags: c_uint,
) -> isize {
    // SAFETY: called by the VFS for an open file of ours.
    let card: Arc<Card> = unsafe { file_card(file) }.into();
    // SAFETY: `file` is valid for the duration of the call.
    let fflags = unsafe { File::from_raw_file(file) }.flags();
    let nonblock = fflags & file::flags::O_NONBLOCK != 0 || flags & SPLICE_F_NONBLOCK != 0;
    // SAFETY: the VFS passes a valid pipe, locked by the caller for the whole call.
    let pipe = unsafe { Pipe::from_raw(pipe) };
    let len = len.min(isize::MAX as usize & !(PAGE_SIZE - 1));
    match card.splice_read(nonblock, &pipe, len) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn fop_mmap(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: the VFS passes a new VMA being set up by this mmap call, valid for the call.
    let vma = unsafe { VmaNew::from_raw(vma) };
    match card.mmap(vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

// ---------------------------------------------------------------------------
// /dev/acqN-out (playback, playback.rs)
// ---------------------------------------------------------------------------

extern "C" {
    fn acq_shim_splice_from_pipe(
        pipe: *mut bindings::pipe_inode_info,
        out: *mut c_void,
        len: usize,
        flags: c_uint,
        continued: bool,
    ) -> isize;
}

/// The actor of `acq_shim_splice_from_pipe` (called by the VFS with the pipe locked).
///
/// # Safety
///
/// `owner` is the `private_data` of an open `/dev/acqN-out` file (an `Arc<Card>`); `page`
/// is the page of a confirmed pipe buffer, valid during the call, with `offset + len`
/// within it.
#[no_mangle]
unsafe extern "C" fn acq_rust_pb_actor(
    owner: *mut c_void,
    page: *mut bindings::page,
    offset: c_uint,
    len: c_uint,
    flags: c_uint,
    spliced: bool,
) -> c_int {
    // SAFETY: the open file holds this reference during the splice (caller's guarantee).
    let card = unsafe { <Arc<Card> as ForeignOwnable>::borrow(owner) };
    let nonblock = flags & SPLICE_F_NONBLOCK != 0;
    // SAFETY: forwarded from the caller.
    match unsafe { card.pb_actor(page, offset as usize, len as usize, nonblock, spliced) } {
        Ok(n) => n as c_int,
        Err(e) => e.to_errno(),
    }
}

// ---------------------------------------------------------------------------
// /dev/acqN-out file operations
// ---------------------------------------------------------------------------

pub(crate) static PB_FOPS: Fops = Fops(bindings::file_operations {
    owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
    open: Some(fop_open::<Playback>),
    release: Some(fop_release::<Playback>),
    write_iter: Some(pb_fop_write_iter),
    splice_write: Some(pb_fop_splice_write),
    poll: Some(fop_poll::<Playback>),
    unlocked_ioctl: Some(fop_ioctl::<Playback>),
    llseek: Some(bindings::noop_llseek),
    ..pin_init::zeroed()
});

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn pb_fop_write_iter(
    iocb: *mut bindings::kiocb,
    from: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: forwarded from the caller (a VFS call for an open file of ours).
    let (card, nonblock) = unsafe { iocb_card(iocb) };
    // SAFETY: a write_iter source is a valid `ITER_SOURCE` iov_iter, used only by this
    // call, that may be read with the standard iov_iter methods during the call.
    let from = unsafe { IovIterSource::from_raw(from) };
    match card.pb_write(nonblock, from) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called only by the VFS through our `file_operations`, with the pointers it passes to
/// this member for an open (or opening) file of ours, valid for the call.
unsafe extern "C" fn pb_fop_splice_write(
    pipe: *mut bindings::pipe_inode_info,
    file: *mut bindings::file,
    ppos: *mut bindings::loff_t,
    len: usize,
    flags: c_uint,
) -> isize {
    // SAFETY: called by the VFS for an open file of ours.
    let card = unsafe { file_card(file) };
    // SAFETY: `file` is valid for the duration of the call.
    let nonblock = unsafe { File::from_raw_file(file) }.flags() & file::flags::O_NONBLOCK != 0;
    let flags = if nonblock {
        flags | SPLICE_F_NONBLOCK
    } else {
        flags
    };
    let len = len.min(isize::MAX as usize & !(PAGE_SIZE - 1));
    // Did an earlier step of this same system call (sendfile()'s loop) already take bytes?
    // Then `*ppos` is where that step left it, and ahead of `f_pos`, which the VFS writes
    // back only when the call ends. The task and the position the last splice_write left
    // are recorded too, so that another call on the same file (whose `f_pos` write-back
    // can land in between) is not taken for this one.
    let task = kernel::current!().as_ptr() as usize;
    // SAFETY: `ppos` is null or valid for the call.
    let pos = (!ppos.is_null()).then(|| unsafe { *ppos });
    // SAFETY: `file` is valid for the call; `f_pos` of a stream is written without a lock
    // by the VFS, so it is read once, as a plain value.
    let f_pos = unsafe { ptr::read_volatile(ptr::addr_of!((*file).f_pos)) };
    let continued = pos.is_some_and(|p| {
        let g = card.pb.lock();
        p != f_pos && g.splice_task == task && g.splice_pos == p
    });
    // SAFETY: `pipe` and `file` are valid for the call (VFS); the shim locks the pipe and
    // calls `acq_rust_pb_actor` with this file's `private_data`.
    let r = unsafe { acq_shim_splice_from_pipe(pipe, file.cast(), len, flags, continued) };
    let mut g = card.pb.lock();
    if let (Some(p), true) = (pos, r > 0) {
        let end = p.wrapping_add(r as i64);
        // SAFETY: `ppos` is valid for the call (`pos` is Some).
        unsafe { *ppos = end };
        g.splice_task = task;
        g.splice_pos = end;
    }
    // Whatever was posted goes to the card now (the actor publishes in batches).
    card.pb_publish(&mut g);
    r
}
