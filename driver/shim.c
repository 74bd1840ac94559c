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

void acq_shim_dma_unmap_page(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_unmap_page(dev, addr, size, DMA_FROM_DEVICE);
}

void acq_shim_dma_sync_for_cpu(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_sync_single_for_cpu(dev, addr, size, DMA_FROM_DEVICE);
}

void acq_shim_dma_sync_for_device(struct device *dev, dma_addr_t addr, size_t size)
{
	dma_sync_single_for_device(dev, addr, size, DMA_FROM_DEVICE);
}
