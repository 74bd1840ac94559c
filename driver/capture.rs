// SPDX-License-Identifier: GPL-2.0

//! read()/readv()/io_uring reads (`->read_iter`) and poll() of `/dev/acqN`: the errno
//! contract of docs/driver.md (gaps and errors latched until a call can return them with
//! no bytes before them; signals checked between blocks).

use super::*;

/// Between two blocks of one read, splice or write call: other tasks get the CPU, and a
/// pending signal ends the call with the `done` bytes it moved (a fatal one thus ends any
/// call within a block time, even one that only finds empty or bad blocks).
/// `None`: go on with the next block.
pub(crate) fn yield_between_blocks(done: usize) -> Option<Result<usize>> {
    // SAFETY: called from process context (a file operation), where sleeping is allowed.
    unsafe { acq_shim_cond_resched() };
    if !kernel::current!().signal_pending() {
        None
    } else if done > 0 {
        Some(Ok(done))
    } else {
        // Nothing moved (say, a card completing empty blocks): the call is restarted
        // after the handler, or fails with EINTR.
        Some(Err(ERESTARTSYS))
    }
}

/// What read() and splice() check before each block of one call, in this order: the card
/// is gone (ENODEV); STOP or RESET (from another thread sharing the file) ended the
/// session the call was reading, so it ends too, with what it has (0: the end of that
/// session's stream), even if a START already began the next one; a gap or error is owed
/// (latched until a call can return it with no bytes before it); the request is full;
/// a pending signal (between blocks, so a fatal one ends any call within a block time);
/// the session halted (with nothing moved, a stopped card starts: never after a STOP,
/// which returned above). `Some(result)` ends the call; `None`: take the next block.
impl Card {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn next_pass(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        moved: usize,
        want: usize,
        stops: u64,
        first_block: &mut bool,
    ) -> Option<Result<usize>> {
        loop {
            if g.removed {
                return Some(if moved > 0 { Ok(moved) } else { Err(ENODEV) });
            }
            if g.stops != stops {
                return Some(Ok(moved));
            }
            if g.xrun || g.err {
                return Some(if moved > 0 {
                    Ok(moved)
                } else {
                    Err(Self::report_owed(g))
                });
            }
            if moved >= want {
                return Some(Ok(moved));
            }
            if !core::mem::replace(first_block, false) {
                if let Some(r) = yield_between_blocks(moved) {
                    return Some(r);
                }
            }
            if g.running {
                return None;
            }
            if moved > 0 {
                return Some(Ok(moved));
            }
            if g.flr_due || g.resetting {
                // The watchdog resets the card: wait, then look again (the reset latches
                // an EIO, and the watchdog may have started the next session).
                if let Err(e) = self.wait_for_reset(g, nonblock) {
                    return Some(Err(e));
                }
                continue;
            }
            match self.start_locked(g) {
                Ok(()) => return None,
                // The card did not answer: a function reset is now due (see above).
                Err(e) if e == EAGAIN && g.flr_due && !nonblock => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The part of a block a read() copies without the card's lock: bytes `pos .. pos + n`
/// of a block of `len` bytes.
pub(crate) struct Claim {
    pos: usize,
    n: usize,
    len: usize,
    /// The session (`Inner::starts`) the block belongs to.
    starts: u64,
}

/// What one pass of a read() found under the lock.
pub(crate) enum Step {
    /// Copy this part of a block from the page (the reference keeps the page out of the
    /// card's hands until the copy is done).
    Copy(PageRef, Claim),
    End(Result<usize>),
}

impl Card {
    /// read()/readv()/io_uring reads (`->read_iter`): see docs/driver.md for the
    /// semantics. One call serves the whole iov_iter, so a gap or an error found after
    /// some bytes stays latched for the next call instead of being dropped by a VFS loop.
    ///
    /// Each copy to user memory runs without the card's lock (pageref.rs says why); the
    /// call owns the stream position meanwhile (`claim_reader`).
    pub(crate) fn read(&self, nonblock: bool, out: &mut IovIterDest<'_>) -> Result<usize> {
        let count = out.len().min(isize::MAX as usize & !(PAGE_SIZE - 1));
        if count == 0 {
            return Ok(0);
        }
        let mut g = self.inner.lock();
        if g.mapped {
            // mmap mode: the consumer takes blocks through ACQ_IOC_MMAP_SYNC.
            return Err(EBUSY);
        }
        self.claim_reader(&mut g, nonblock)?;
        self.read_owned(g, nonblock, out, count)
    }

    /// One reader at a time owns the stream position, for a whole read() or splice() (its
    /// bytes are contiguous, and `inner` is dropped for its copies). Another one waits,
    /// interruptibly (`EAGAIN` with `nonblock`), until `release_reader`.
    pub(crate) fn claim_reader(&self, g: &mut MutexGuard<'_, Inner>, nonblock: bool) -> Result {
        let period = msecs_to_jiffies(READ_RECHECK_MS);
        claim_flag(&self.wait, g, nonblock, period, |i: &mut Inner| {
            &mut i.reader_busy
        })
    }

    /// Ends a `claim_reader`: the buffers consumed go back to the card, and a waiting
    /// reader may go on.
    pub(crate) fn release_reader(&self, g: &mut MutexGuard<'_, Inner>) {
        self.flush_reposts(g);
        g.reader_busy = false;
        self.wait.notify_all();
    }

    /// The body of read(), owning the stream position (and returning it).
    fn read_owned<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        nonblock: bool,
        out: &mut IovIterDest<'_>,
        count: usize,
    ) -> Result<usize> {
        let stops = g.stops;
        let mut first_block = true;
        let mut copied = 0usize;
        let r = loop {
            let (page, claim) =
                match self.next_block(&mut g, nonblock, copied, count, stops, &mut first_block) {
                    Step::Copy(page, claim) => (page, claim),
                    Step::End(r) => break r,
                };
            drop(g);
            let k = page.copy_to(claim.pos, claim.n, out);
            // Dropped before the lock is taken again, so that the repost of this block
            // finds its page free.
            drop(page);
            g = self.inner.lock();
            copied += k;
            self.copied(&mut g, &claim, k);
            if k < claim.n {
                // A fault in the user's buffer: the bytes that did arrive count, the rest
                // of the block stays for the next call.
                break if copied > 0 { Ok(copied) } else { Err(EFAULT) };
            }
        };
        // Whatever happened, the buffers consumed so far go back to the card now.
        self.release_reader(&mut g);
        r
    }

    /// Under the lock: the next block to copy for a read() that has `copied` of its
    /// `count` bytes, or the call's result (waiting for a block if it must).
    fn next_block(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        copied: usize,
        count: usize,
        stops: u64,
        first_block: &mut bool,
    ) -> Step {
        let end = |e: Error| Step::End(if copied > 0 { Ok(copied) } else { Err(e) });
        loop {
            if let Some(r) = self.next_pass(g, nonblock, copied, count, stops, first_block) {
                return Step::End(r);
            }
            let head = g.head;
            let Some(c) = self.completion(g, head) else {
                if self.head_lost(g) {
                    self.skip_lost(g);
                    g.err = true;
                    continue;
                }
                if nonblock {
                    return end(EAGAIN);
                }
                // A blocking read fills its request (docs/driver.md). Give the card every
                // free buffer before sleeping.
                self.flush_reposts(g);
                let period = msecs_to_jiffies(READ_RECHECK_MS);
                match self.sleepers.sleep(&self.wait, g, period, |g| self.news(g)) {
                    CondVarTimeoutResult::Signal { .. } => return end(ERESTARTSYS),
                    _ => continue,
                }
            };
            let Some((id, len)) = self.decode(g, &c) else {
                // An EIO or EPIPE is owed now: reported at the top of the loop.
                continue;
            };
            let pos = g.block_pos as usize;
            let n = (len - pos.min(len)).min(count - copied);
            let b2 = g.bar2_layout();
            let starts = g.starts;
            let Some((index, page)) = g.hw.as_ref().and_then(|hw| hw.slot_buf(id)) else {
                return end(ENODEV);
            };
            if pos == 0 {
                if let Err(e) = self.take_for_cpu(b2, id, index, page, len) {
                    return end(e);
                }
            }
            return Step::Copy(
                PageRef::new(&page.page),
                Claim {
                    pos,
                    n,
                    len,
                    starts,
                },
            );
        }
    }

    /// Under the lock again after copying `k` bytes of `claim`: counts them, and moves the
    /// stream position past them if the block's session still owns the ring. (A STOP,
    /// RESET, watchdog restart or halt during the copy already took the ring back; the
    /// bytes were the old session's and the next pass ends the call or reports why.)
    fn copied(&self, g: &mut MutexGuard<'_, Inner>, claim: &Claim, k: usize) {
        if g.starts != claim.starts || !g.running || g.mapped {
            // The stream position (and `read_offset`) belongs to the next session now.
            return;
        }
        g.stats.bytes = g.stats.bytes.wrapping_add(k as u64);
        g.stats.read_offset = g.stats.read_offset.wrapping_add(k as u64);
        if claim.pos + k >= claim.len {
            g.stats.blocks += 1;
            self.consumed(g);
        } else {
            g.block_pos = (claim.pos + k) as u32;
        }
    }

    /// Takes the gap (`EPIPE`) or error (`EIO`) a consumer is owed. The caller checked
    /// that one is (`xrun || err`) and has delivered no bytes in this call, so the errno
    /// reaches userspace: until such a call, the mark stays latched.
    pub(crate) fn report_owed(g: &mut Inner) -> Error {
        if g.xrun {
            g.xrun = false;
            EPIPE
        } else {
            g.err = false;
            EIO
        }
    }

    /// open() of `/dev/acqN`: one opener at a time.
    pub(crate) fn open(&self) -> Result {
        let mut g = self.inner.lock();
        if g.removed {
            return Err(ENODEV);
        }
        if g.open {
            return Err(EBUSY);
        }
        g.open = true;
        g.poll_stops = None;
        Ok(())
    }

    /// The last close of `/dev/acqN`: the capture session ends.
    pub(crate) fn release(&self) {
        let mut g = self.inner.lock();
        if !g.removed {
            self.stop_locked(&mut g);
        }
        g.err = false;
        g.open = false;
        // Pages still mapped in a process keep their own references (the pool skips them).
        g.mapped = false;
        g.mmap_held = 0;
    }

    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>) -> c_uint {
        table.register_wait(file, &self.wait);
        let mut g = self.inner.lock();
        if g.removed {
            return POLLERR | POLLHUP;
        }
        if !g.running && !g.err && !g.xrun {
            if g.poll_stops.is_some_and(|s| s != g.stops) {
                // A STOP or RESET ended the session this poller watched (it woke the
                // poller): the card stays stopped until START or a read(), and there is
                // nothing to report. Starting here would undo the STOP at once, for every
                // epoll loop on the file.
                return 0;
            }
            // Like read(), poll() starts a stopped card, so that poll-driven readers work
            // without an explicit start.
            match self.start_locked(&mut g) {
                Ok(()) => {}
                // A function reset is under way: nothing to report yet (its end wakes
                // the poller).
                Err(e) if e == EAGAIN => return 0,
                Err(_) => return POLLERR,
            }
        }
        if g.running {
            g.poll_stops = Some(g.stops);
        }
        self.flush_reposts(&mut g);
        let mut mask = 0;
        if g.err || g.halted {
            mask |= POLLERR;
        }
        if self.readable(&g) {
            mask |= POLLIN | POLLRDNORM;
        }
        mask
    }
}
