// SPDX-License-Identifier: GPL-2.0
/*
 * C shim of acq.ko for dma-buf (docs/driver.md, "Sharing the ring with another device").
 * Rust-for-Linux 7.3 has no dma-buf abstraction, and an exporter is a table of C
 * callbacks plus DEFINE_DMA_BUF_EXPORT_INFO, a C macro. Two halves, each used from
 * exactly one safe Rust type:
 *
 * - the exporter (`ExportedRing`, driver/dmabuf.rs): the capture ring's pages as one
 *   read-only dma-buf. It owns one reference per page and nothing else: no card, no
 *   device. So it outlives a closed /dev/acqN, an unbound card and anything else but its
 *   last holder, and its callbacks take no card lock (nothing can form a cycle with the
 *   dma_resv lock the core holds around map and unmap).
 * - the importer (`Import`, driver/playback/import.rs): a dma-buf attached to and mapped
 *   for the card's playback channel, as the DMA addresses of its 4 KiB pages.
 */
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/file.h>
#include <linux/fcntl.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

/* Every dma_buf_* symbol is exported in this namespace. */
MODULE_IMPORT_NS("DMA_BUF");

/* ---------------------------------------------------------------- exporter */

struct acq_dmabuf {
	unsigned int n;
	struct page *pages[];	/* one reference each, put at release */
};

/*
 * A fresh table for every map (one table cannot carry two devices' mappings; the core
 * hands ownership to the importer until unmap). One entry per page: the ring's pages are
 * scattered order-0 pages, and an IOMMU may still merge them into larger IOVA segments.
 */
static struct sg_table *acq_dmabuf_map(struct dma_buf_attachment *a,
				       enum dma_data_direction dir)
{
	struct acq_dmabuf *b = a->dmabuf->priv;
	struct sg_table *sgt;
	int ret;

	/* The ring is the card's to write: another device may only read it. */
	if (dir != DMA_TO_DEVICE)
		return ERR_PTR(-EPERM);
	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt)
		return ERR_PTR(-ENOMEM);
	ret = sg_alloc_table_from_pages_segment(sgt, b->pages, b->n, 0,
						(unsigned long)b->n << PAGE_SHIFT, PAGE_SIZE,
						GFP_KERNEL);
	if (ret)
		goto free;
	/* With a CPU sync: a bounce buffer starts out with what the pages hold now. */
	ret = dma_map_sgtable(a->dev, sgt, dir, 0);
	if (ret)
		goto table;
	return sgt;
table:
	sg_free_table(sgt);
free:
	kfree(sgt);
	return ERR_PTR(ret);
}

static void acq_dmabuf_unmap(struct dma_buf_attachment *a, struct sg_table *sgt,
			     enum dma_data_direction dir)
{
	dma_unmap_sgtable(a->dev, sgt, dir, 0);
	sg_free_table(sgt);
	kfree(sgt);
}

/*
 * CPU access (mmap of the dma-buf) is read-only. No begin/end_cpu_access: the CPU's
 * view of a block is made current when ACQ_IOC_MMAP_SYNC hands the block out (the ring
 * protocol's sync point, as in mmap mode), and neither the CPU nor an importer ever
 * writes these pages, so there is nothing for DMA_BUF_IOCTL_SYNC to push anywhere. The
 * ioctl still works (the core waits for fences; this exporter has none).
 */
static int acq_dmabuf_mmap(struct dma_buf *d, struct vm_area_struct *vma)
{
	struct acq_dmabuf *b = d->priv;

	/* The descriptor is O_RDONLY, which stops a shared writable mapping; this also
	 * stops a private one (whose copy-on-write would be ours to get right). */
	if (vma->vm_flags & VM_WRITE)
		return -EACCES;
	vm_flags_clear(vma, VM_MAYWRITE);
	vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	/* The mapping takes its own page references (and the core a file reference). */
	return vm_map_pages(vma, b->pages, b->n);
}

/* After the last holder: the pages go back (to the pool, or freed if it is gone). */
static void acq_dmabuf_release(struct dma_buf *d)
{
	struct acq_dmabuf *b = d->priv;
	unsigned int i;

	for (i = 0; i < b->n; i++)
		put_page(b->pages[i]);
	kfree(b);
}

static const struct dma_buf_ops acq_dmabuf_ops = {
	.map_dma_buf = acq_dmabuf_map,
	.unmap_dma_buf = acq_dmabuf_unmap,
	.mmap = acq_dmabuf_mmap,
	.release = acq_dmabuf_release,
};

/* Called from Rust only. */
int acq_shim_dmabuf_export(struct page **pages, unsigned int n, bool cloexec,
			   struct dma_buf **out, int *fd_out);
void acq_shim_dmabuf_publish(struct dma_buf *d, int fd);
void acq_shim_dmabuf_abort(struct dma_buf *d, int fd);

/*
 * A dma-buf of `n` pages (a reference of its own on each) and a reserved descriptor for
 * it, not yet visible to the process: the caller still has to copy the answer out, and
 * an installed descriptor cannot be taken back. Then publish, or abort.
 */
int acq_shim_dmabuf_export(struct page **pages, unsigned int n, bool cloexec,
			   struct dma_buf **out, int *fd_out)
{
	DEFINE_DMA_BUF_EXPORT_INFO(info);
	struct acq_dmabuf *b;
	struct dma_buf *d;
	unsigned int i;
	int fd, ret;

	if (!n)
		return -EINVAL;
	b = kzalloc(struct_size(b, pages, n), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->n = n;
	for (i = 0; i < n; i++) {
		get_page(pages[i]);
		b->pages[i] = pages[i];
	}
	fd = get_unused_fd_flags(O_RDONLY | (cloexec ? O_CLOEXEC : 0));
	if (fd < 0) {
		ret = fd;
		goto release;
	}
	info.ops = &acq_dmabuf_ops;
	info.size = (size_t)n << PAGE_SHIFT;
	info.flags = O_RDONLY;
	info.priv = b;
	d = dma_buf_export(&info);
	if (IS_ERR(d)) {
		put_unused_fd(fd);
		ret = PTR_ERR(d);
		goto release;
	}
	*out = d;
	*fd_out = fd;
	return 0;
release:
	for (i = 0; i < n; i++)
		put_page(b->pages[i]);
	kfree(b);
	return ret;
}

void acq_shim_dmabuf_publish(struct dma_buf *d, int fd)
{
	dma_buf_fd_install(d, fd);
}

/* The export's only reference goes: release runs (deferred, as for any last fput). */
void acq_shim_dmabuf_abort(struct dma_buf *d, int fd)
{
	put_unused_fd(fd);
	dma_buf_put(d);
}

/* ---------------------------------------------------------------- importer */

struct acq_import {
	struct dma_buf *dmabuf;
	struct dma_buf_attachment *att;
	struct sg_table *sgt;
};

/* Called from Rust only. */
int acq_shim_dmabuf_import(int fd, struct device *dev, u64 *addrs, unsigned int max_pages,
			   unsigned int *pages, u64 *size, struct acq_import **out);
void acq_shim_dmabuf_unimport(struct acq_import *imp);

/*
 * Attaches the dma-buf behind `fd` to `dev` (a static importer: no move notification, so
 * the exporter keeps the mapping where it is until unmap) and maps it for reading by the
 * device. `addrs` gets the device address of each 4 KiB page, in order; only the DMA
 * addresses are looked at (with CONFIG_DMABUF_DEBUG the table's page links are
 * scrambled, and an importer has no business with another driver's pages). `dev` must
 * stay bound until acq_shim_dmabuf_unimport().
 */
int acq_shim_dmabuf_import(int fd, struct device *dev, u64 *addrs, unsigned int max_pages,
			   unsigned int *pages, u64 *size, struct acq_import **out)
{
	struct acq_import *imp;
	struct scatterlist *sg;
	unsigned int i, n = 0, want;
	int ret;

	imp = kzalloc(sizeof(*imp), GFP_KERNEL);
	if (!imp)
		return -ENOMEM;
	imp->dmabuf = dma_buf_get(fd);
	if (IS_ERR(imp->dmabuf)) {
		ret = PTR_ERR(imp->dmabuf);
		goto free;
	}
	if (!imp->dmabuf->size || !PAGE_ALIGNED(imp->dmabuf->size) ||
	    imp->dmabuf->size > (size_t)max_pages << PAGE_SHIFT) {
		ret = -EINVAL;
		goto put;
	}
	want = imp->dmabuf->size >> PAGE_SHIFT;
	imp->att = dma_buf_attach(imp->dmabuf, dev);
	if (IS_ERR(imp->att)) {
		ret = PTR_ERR(imp->att);
		goto put;
	}
	imp->sgt = dma_buf_map_attachment_unlocked(imp->att, DMA_TO_DEVICE);
	if (IS_ERR(imp->sgt)) {
		ret = PTR_ERR(imp->sgt);
		goto detach;
	}
	for_each_sgtable_dma_sg(imp->sgt, sg, i) {
		dma_addr_t a = sg_dma_address(sg);
		unsigned int len = sg_dma_len(sg), off;

		/* The card reads whole pages: an exporter's table must be page-granular. */
		if (!PAGE_ALIGNED(a) || !PAGE_ALIGNED(len) || len > (want - n) << PAGE_SHIFT) {
			ret = -EINVAL;
			goto unmap;
		}
		for (off = 0; off < len; off += PAGE_SIZE)
			addrs[n++] = a + off;
	}
	if (n != want) {
		ret = -EINVAL;
		goto unmap;
	}
	*pages = n;
	*size = imp->dmabuf->size;
	*out = imp;
	return 0;
unmap:
	dma_buf_unmap_attachment_unlocked(imp->att, imp->sgt, DMA_TO_DEVICE);
detach:
	dma_buf_detach(imp->dmabuf, imp->att);
put:
	dma_buf_put(imp->dmabuf);
free:
	kfree(imp);
	return ret;
}

void acq_shim_dmabuf_unimport(struct acq_import *imp)
{
	dma_buf_unmap_attachment_unlocked(imp->att, imp->sgt, DMA_TO_DEVICE);
	dma_buf_detach(imp->dmabuf, imp->att);
	dma_buf_put(imp->dmabuf);
	kfree(imp);
}
