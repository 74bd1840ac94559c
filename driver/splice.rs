// SPDX-License-Identifier: GPL-2.0

//! splice() of `/dev/acqN`: pool pages lent to pipes without a copy, with our own pipe
//! buffer operations (->confirm, ->release, ->get in the C shim, forwarded here).

use super::*;

/// A pipe that splice_read() fills, locked by the VFS for the lifetime `'a`.
pub(crate) struct Pipe<'a> {
    raw: *mut bindings::pipe_inode_info,
    _locked: core::marker::PhantomData<&'a mut bindings::pipe_inode_info>,
}

impl Pipe<'_> {
    /// # Safety
    ///
    /// `raw` must be a valid pipe, locked by the caller while the `Pipe` lives.
    pub(crate) unsafe fn from_raw(raw: *mut bindings::pipe_inode_info) -> Self {
        Self {
            raw,
            _locked: core::marker::PhantomData,
        }
    }

    /// Lends bytes `offset .. offset + len` of `page` to the pipe, without a copy. The
    /// pipe buffer holds a page reference, a module reference and a `card` reference
    /// until its ->release (`acq_rust_buf_release`). Returns `len`, or `EAGAIN` (the pipe
    /// is full) / `EPIPE` (no readers; SIGPIPE was sent), having dropped them again.
    pub(crate) fn lend(
        &self,
        page: &StreamingPage,
        offset: usize,
        len: usize,
        card: &Arc<Card>,
    ) -> Result<usize> {
        if offset >= PAGE_SIZE || len > PAGE_SIZE - offset {
            return Err(EINVAL);
        }
        let owner = card.clone().into_foreign() as c_ulong;
        // SAFETY: `raw` is a valid locked pipe (type invariant); the page is valid (the
        // pool holds it) and the shim takes its own reference; `offset + len` is within the
        // page. Ownership of `owner` passes to the pipe buffer (or is released by the shim
        // through `acq_rust_buf_release` when the pipe refuses the buffer).
        let r = unsafe {
            acq_shim_lend_page(
                self.raw,
                page.page.as_ptr().cast(),
                offset as c_uint,
                len as c_uint,
                owner,
            )
        };
        if r < 0 {
            Err(Error::from_errno(r as c_int))
        } else {
            Ok(r as usize)
        }
    }
}

/// ->confirm of a lent page (shim): is the DMA into the page complete?
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference a live pipe buffer holds (from `Pipe::lend`).
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_confirm(owner: c_ulong, index: c_ulong) -> c_int {
    // SAFETY: the pipe buffer holds this reference for as long as it exists (caller's
    // guarantee); we only borrow it.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::borrow(owner as *mut c_void) };
    match card.confirm(index) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// ->release of a lent page (shim): drops the buffer's `Arc<Card>`. The shim drops the
/// page reference (the pool reuses the page once nobody else holds it) and the module
/// reference.
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference of a pipe buffer being released; it is not
/// used again.
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_release(owner: c_ulong) {
    // SAFETY: the reference was passed to the buffer with `into_foreign` by `Pipe::lend`
    // or `acq_rust_buf_get` and is reclaimed exactly once, here.
    drop(unsafe { <Arc<Card> as ForeignOwnable>::from_foreign(owner as *mut c_void) });
}

/// ->get of a lent page (shim, tee()): the new pipe buffer gets its own `Arc<Card>`
/// (the shim takes the page and module references).
///
/// # Safety
///
/// `owner` must be the `Arc<Card>` reference a live pipe buffer holds.
#[no_mangle]
unsafe extern "C" fn acq_rust_buf_get(owner: c_ulong) {
    // SAFETY: the pipe buffer holds this reference (caller's guarantee); we only borrow it.
    let card = unsafe { <Arc<Card> as ForeignOwnable>::borrow(owner as *mut c_void) };
    let copy: Arc<Card> = card.into();
    // The copy belongs to the new pipe buffer and is reclaimed by its ->release.
    let _ = copy.into_foreign();
}

impl Card {
    /// splice_read(): like read(), but the blocks' pages go into the pipe without a copy.
    /// Returns as soon as something was spliced and no further block is ready (a splicer
    /// sleeping here holds the pipe's lock), or when the pipe or `len` is full.
    ///
    /// The VFS calls it once per splice() (and per sendfile() into a pipe). sendfile()
    /// into a file or a socket, whose loop would drop an errno after earlier bytes, never
    /// reaches it: the kernel refuses a direct splice from a stream (`EINVAL`).
    pub(crate) fn splice_read(
        self: &Arc<Self>,
        nonblock: bool,
        pipe: &Pipe<'_>,
        len: usize,
    ) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        // The stream position is read()'s too, which moves it with `inner` dropped.
        let mut g = self.inner.lock();
        if g.mapped {
            return Err(EBUSY);
        }
        self.claim_reader(&mut g, nonblock)?;
        let r = self.splice_locked(&mut g, nonblock, pipe, len);
        self.release_reader(&mut g);
        r
    }

    pub(crate) fn splice_locked(
        self: &Arc<Self>,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        pipe: &Pipe<'_>,
        len: usize,
    ) -> Result<usize> {
        let mut done = 0usize;
        let stops = g.stops;
        let mut first_block = true;
        if g.mapped {
            return Err(EBUSY);
        }
        loop {
            if let Some(r) = self.next_pass(g, nonblock, done, len, stops, &mut first_block) {
                return r;
            }
            let head = g.head;
            let comp = self.completion(g, head);
            let Some(c) = comp else {
                if self.head_lost(g) {
                    self.skip_lost(g);
                    g.err = true;
                    continue;
                }
                if done > 0 {
                    return Ok(done);
                }
                if nonblock {
                    return Err(EAGAIN);
                }
                self.flush_reposts(g);
                let period = msecs_to_jiffies(READ_RECHECK_MS);
                match self.sleepers.sleep(&self.wait, g, period, |g| self.news(g)) {
                    CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                    _ => continue,
                }
            };
            let Some((id, blen)) = self.decode(g, &c) else {
                continue;
            };
            let pos = g.block_pos as usize;
            let n = (blen - pos.min(blen)).min(len - done);
            if n == 0 {
                // An empty block: nothing to lend.
                g.stats.blocks += 1;
                self.consumed(g);
                continue;
            }
            let b2 = g.bar2_layout();
            let res = match g.hw.as_ref().and_then(|hw| hw.slot_buf(id)) {
                Some((index, page)) => {
                    let taken = if pos == 0 {
                        self.take_for_cpu(b2, id, index, page, blen)
                    } else {
                        Ok(())
                    };
                    taken.and_then(|()| pipe.lend(page, pos, n, self))
                }
                None => Err(ENODEV),
            };
            match res {
                Ok(k) if k == n => {}
                // Pipe full (EAGAIN), no readers (EPIPE, with SIGPIPE), or removed: the block
                // stays; what was spliced so far is returned.
                Ok(_) | Err(_) if done > 0 => return Ok(done),
                Ok(_) => return Err(EAGAIN),
                Err(e) => return Err(e),
            }
            done += n;
            g.stats.spliced_bytes = g.stats.spliced_bytes.wrapping_add(n as u64);
            g.stats.read_offset = g.stats.read_offset.wrapping_add(n as u64);
            if pos + n >= blen {
                g.stats.blocks += 1;
                self.consumed(g);
            } else {
                g.block_pos = (pos + n) as u32;
            }
        }
    }

    /// ->confirm of a lent pool page: waits (interruptibly, at most `CONFIRM_TIMEOUT_MS`)
    /// until the page is no longer under DMA. Pages are lent only after their completion
    /// was consumed, so this returns at once unless the pool's bookkeeping is wrong; the
    /// timeout turns such a bug into EIO for the pipe reader instead of torn data.
    pub(crate) fn confirm(&self, index: usize) -> Result {
        let Some(busy) = self.busy.get(index) else {
            return Err(EIO);
        };
        if busy.load(Acquire) == 0 {
            return Ok(());
        }
        let mut g = self.inner.lock();
        let mut waited = 0;
        while busy.load(Acquire) != 0 {
            if g.removed || waited >= CONFIRM_TIMEOUT_MS {
                return Err(EIO);
            }
            if let CondVarTimeoutResult::Signal { .. } = self
                .wait
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(READ_RECHECK_MS))
            {
                return Err(EINTR);
            }
            waited += READ_RECHECK_MS;
        }
        Ok(())
    }
}
