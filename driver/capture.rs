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
    pub(crate) fn next_pass(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        moved: usize,
        want: usize,
        stops: u64,
        first_block: &mut bool,
    ) -> Option<Result<usize>> {
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
        if !g.running {
            if moved > 0 {
                return Some(Ok(moved));
            }
            if let Err(e) = self.start_locked(g) {
                return Some(Err(e));
            }
        }
        None
    }
}

impl Card {
    /// read()/readv()/io_uring reads (`->read_iter`): see docs/driver.md for the
    /// semantics. One call serves the whole iov_iter, so a gap or an error found after
    /// some bytes stays latched for the next call instead of being dropped by a VFS loop.
    pub(crate) fn read(&self, nonblock: bool, out: &mut IovIterDest<'_>) -> Result<usize> {
        let count = out.len().min(isize::MAX as usize & !(PAGE_SIZE - 1));
        if count == 0 {
            return Ok(0);
        }
        let mut g = self.inner.lock();
        let r = self.read_locked(&mut g, nonblock, out, count);
        // Whatever happened, the buffers consumed so far go back to the card now.
        self.flush_reposts(&mut g);
        r
    }

    pub(crate) fn read_locked(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        nonblock: bool,
        out: &mut IovIterDest<'_>,
        count: usize,
    ) -> Result<usize> {
        let mut copied = 0usize;
        let stops = g.stops;
        let mut first_block = true;
        if g.mapped {
            // mmap mode: the consumer takes blocks through ACQ_IOC_MMAP_SYNC.
            return Err(EBUSY);
        }
        loop {
            if let Some(r) = self.next_pass(g, copied, count, stops, &mut first_block) {
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
                if nonblock {
                    return if copied > 0 { Ok(copied) } else { Err(EAGAIN) };
                }
                // A blocking read fills its request (docs/driver.md). Give the card every
                // free buffer before sleeping.
                self.flush_reposts(g);
                match self
                    .wait
                    .wait_interruptible_timeout(g, msecs_to_jiffies(READ_RECHECK_MS))
                {
                    CondVarTimeoutResult::Signal { .. } => {
                        return if copied > 0 { Ok(copied) } else { Err(ERESTARTSYS) };
                    }
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
            let res = match g.hw.as_ref().and_then(|hw| hw.slot_buf(id)) {
                Some((index, page)) => {
                    let taken = if pos == 0 {
                        self.take_for_cpu(b2, id, index, page, len)
                    } else {
                        Ok(())
                    };
                    taken.map(|()| page.copy_to(pos, n, out))
                }
                None => Err(ENODEV),
            };
            // A short copy is a fault in the user's buffer: the bytes that did arrive
            // count, the rest of the block stays for the next call.
            let k = match res {
                Ok(k) => k,
                Err(e) => return if copied > 0 { Ok(copied) } else { Err(e) },
            };
            copied += k;
            g.stats.bytes = g.stats.bytes.wrapping_add(k as u64);
            g.stats.read_offset = g.stats.read_offset.wrapping_add(k as u64);
            if pos + k >= len {
                g.stats.blocks += 1;
                self.consumed(g);
            } else {
                g.block_pos = (pos + k) as u32;
            }
            if k < n {
                return if copied > 0 { Ok(copied) } else { Err(EFAULT) };
            }
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

    pub(crate) fn poll(&self, file: &File, table: &PollTable<'_>) -> c_uint {
        table.register_wait(file, &self.wait);
        let mut g = self.inner.lock();
        if g.removed {
            return POLLERR | POLLHUP;
        }
        if !g.running && !g.err && !g.xrun {
            // Like read(), poll() starts a stopped card, so that poll-driven readers work
            // without an explicit start.
            if self.start_locked(&mut g).is_err() {
                return POLLERR;
            }
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
