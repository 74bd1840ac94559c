// SPDX-License-Identifier: GPL-2.0
/*
 * C shim of acq.ko: single-page streaming DMA mappings. Rust-for-Linux 7.3 has no
 * wrapper for dma_map_page()/dma_mapping_error()/dma_sync_single_*() (the last two are
 * static inlines, so bindgen cannot reach them). Each function is used from exactly one
 * safe Rust type (`StreamingPage` in acq_main.rs).
 */
#include <linux/dma-mapping.h>

/* Called from Rust only (declared there in an `extern "C"` block). */
int acq_shim_dma_map_page(struct device *dev, struct page *page, size_t size,
			  dma_addr_t *addr);
void acq_shim_dma_unmap_page(struct device *dev, dma_addr_t addr, size_t size);
void acq_shim_dma_sync_for_cpu(struct device *dev, dma_addr_t addr, size_t size);
void acq_shim_dma_sync_for_device(struct device *dev, dma_addr_t addr, size_t size);

int acq_shim_dma_map_page(struct device *dev, struct page *page, size_t size,
			  dma_addr_t *addr)
{
	dma_addr_t a = dma_map_page(dev, page, 0, size, DMA_FROM_DEVICE);

	if (dma_mapping_error(dev, a))
		return -ENOMEM;
	*addr = a;
	return 0;
}

/*
 * Without a CPU sync: every byte the CPU reads from a pool page was synced for it when
 * its completion was taken, and at unmap time (unbind) the engine is stopped and bus
 * mastering is off, so a sync could bring nothing new. It could only do harm: with a
 * bounce buffer (swiotlb=force, a confidential-computing guest) it copies the bounce
 * buffer over the page, and in BAR2 mode, where the CPU fills the page, or for a page a
 * pipe still holds, that buffer is stale.
 */
void acq_shim_dma_unmap_page(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_unmap_page_attrs(dev, addr, size, DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
}

void acq_shim_dma_sync_for_cpu(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_sync_single_for_cpu(dev, addr, size, DMA_FROM_DEVICE);
}

void acq_shim_dma_sync_for_device(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_sync_single_for_device(dev, addr, size, DMA_FROM_DEVICE);
}

/*
 * Zero-copy splice: pool pages lent to a pipe. The pipe buffer operations are C (there
 * are no pipe types in the Rust bindings); each one forwards to one Rust function. A lent
 * buffer holds a page reference, a module reference (our ops table and callbacks must
 * outlive it) and `private`, an owner reference the Rust side took (`Arc<Card>`). Used
 * from exactly one safe Rust type (`Pipe` in acq_main.rs).
 */
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pipe_fs_i.h>
#include <linux/splice.h>

/* Implemented in Rust. */
int acq_rust_buf_confirm(unsigned long owner, unsigned long index);
void acq_rust_buf_release(unsigned long owner);
void acq_rust_buf_get(unsigned long owner);

/* Called from Rust only. */
ssize_t acq_shim_lend_page(struct pipe_inode_info *pipe, struct page *page,
			   unsigned int offset, unsigned int len, unsigned long owner);
int acq_shim_page_count(struct page *page);
void acq_shim_page_set_index(struct page *page, unsigned long index);

static int acq_buf_confirm(struct pipe_inode_info *pipe, struct pipe_buffer *buf)
{
	return acq_rust_buf_confirm(buf->private, page_private(buf->page));
}

static void acq_buf_release(struct pipe_inode_info *pipe, struct pipe_buffer *buf)
{
	acq_rust_buf_release(buf->private);
	put_page(buf->page);
	module_put(THIS_MODULE);
}

/*
 * tee(): a second pipe buffer on the same page; every reference is taken again. Like
 * generic_pipe_buf_get(), try_get_page() refuses a page whose reference count has already
 * wrapped (tee() then fails), rather than taking one more reference on it (the
 * CVE-2019-11487 class).
 */
static bool acq_buf_get(struct pipe_inode_info *pipe, struct pipe_buffer *buf)
{
	if (!try_get_page(buf->page))
		return false;
	__module_get(THIS_MODULE);
	acq_rust_buf_get(buf->private);
	return true;
}

static const struct pipe_buf_operations acq_pipe_buf_ops = {
	.confirm = acq_buf_confirm,
	.release = acq_buf_release,
	.get = acq_buf_get,
	/* no .try_steal: the page belongs to the pool (SPLICE_F_MOVE copies) */
};

/*
 * Lends `page` (bytes offset .. offset + len) to `pipe`. Returns len, or -EAGAIN (pipe
 * full) / -EPIPE (no readers): then add_to_pipe() already released the buffer, which
 * dropped every reference this took, `owner` included.
 */
ssize_t acq_shim_lend_page(struct pipe_inode_info *pipe, struct page *page,
			   unsigned int offset, unsigned int len, unsigned long owner)
{
	struct pipe_buffer buf = {
		.page = page,
		.offset = offset,
		.len = len,
		.ops = &acq_pipe_buf_ops,
		.private = owner,
	};

	__module_get(THIS_MODULE);
	get_page(page);
	return add_to_pipe(pipe, &buf);
}

/* cond_resched() is a macro around a static inline under some preemption models. */
void acq_shim_cond_resched(void);
void acq_shim_cond_resched(void)
{
	cond_resched();
}

int acq_shim_page_count(struct page *page)
{
	return page_count(page);
}

void acq_shim_page_set_index(struct page *page, unsigned long index)
{
	set_page_private(page, index);
}

/*
 * Playback (host -> card, driver/playback.rs). Device-bound streaming mappings of a page
 * range (bounce pages and pipe pages), page references for pipe pages kept until the
 * card's completion, and splice_write: the VFS's pipe loop (__splice_from_pipe) with an
 * actor that forwards each pipe buffer to Rust. Each function is used from exactly one
 * safe Rust type or function in playback.rs.
 */

/* Implemented in Rust: takes `len` bytes at `offset` of `page`; returns bytes taken or
 * -errno. */
int acq_rust_pb_actor(void *owner, struct page *page, unsigned int offset,
		      unsigned int len, unsigned int flags, bool spliced);

/* Called from Rust only. */
int acq_shim_dma_map_to_device(struct device *dev, struct page *page, unsigned int offset,
			       size_t size, dma_addr_t *addr);
void acq_shim_dma_unmap_to_device(struct device *dev, dma_addr_t addr, size_t size);
void acq_shim_dma_sync_to_device(struct device *dev, dma_addr_t addr, size_t size);
void acq_shim_get_page(struct page *page);
void acq_shim_put_page(struct page *page);
ssize_t acq_shim_splice_from_pipe(struct pipe_inode_info *pipe, struct file *out,
				  size_t len, unsigned int flags, bool continued);

int acq_shim_dma_map_to_device(struct device *dev, struct page *page, unsigned int offset,
			       size_t size, dma_addr_t *addr)
{
	dma_addr_t a = dma_map_page(dev, page, offset, size, DMA_TO_DEVICE);

	if (dma_mapping_error(dev, a))
		return -ENOMEM;
	*addr = a;
	return 0;
}

void acq_shim_dma_unmap_to_device(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_unmap_page(dev, addr, size, DMA_TO_DEVICE);
}

void acq_shim_dma_sync_to_device(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_sync_single_for_device(dev, addr, size, DMA_TO_DEVICE);
}

void acq_shim_get_page(struct page *page)
{
	get_page(page);
}

void acq_shim_put_page(struct page *page)
{
	put_page(page);
}

/* A splice_write() in progress: `continued` when an earlier step of the same system call
 * (sendfile()'s loop) already took bytes. */
struct acq_splice {
	struct splice_desc sd;
	bool continued;
};

static int acq_pipe_to_device(struct pipe_inode_info *pipe, struct pipe_buffer *buf,
			      struct splice_desc *sd)
{
	struct acq_splice *s = container_of(sd, struct acq_splice, sd);

	/*
	 * The pipe buffer was confirmed by the caller; sd->len <= buf->len.
	 * __splice_from_pipe() returns the bytes spliced so far and drops a later errno:
	 * Rust keeps an owed error latched when some bytes were already taken.
	 */
	return acq_rust_pb_actor(sd->u.file->private_data, buf->page, buf->offset, sd->len,
				 sd->flags, s->continued || sd->num_spliced != 0);
}

/* splice_from_pipe() is not exported: the same, around the exported __splice_from_pipe. */
ssize_t acq_shim_splice_from_pipe(struct pipe_inode_info *pipe, struct file *out,
				  size_t len, unsigned int flags, bool continued)
{
	ssize_t ret;
	struct acq_splice s = {
		.sd = {
			.total_len = len,
			.flags = flags,
			.pos = 0,
			.u.file = out,
		},
		.continued = continued,
	};

	pipe_lock(pipe);
	ret = __splice_from_pipe(pipe, &s.sd, acq_pipe_to_device);
	pipe_unlock(pipe);
	return ret;
}
