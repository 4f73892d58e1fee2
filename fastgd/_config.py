"""Compiler options shared by every compiled kernel (one place, not one per decorator)."""

# Numba fast-math subset: it allows reassociation (so reductions vectorize) and fused
# multiply-add, but keeps NaN/inf semantics ("nnan"/"ninf" are left out) so that
# divergence detection inside the kernels still sees non-finite losses.
FASTMATH_FLAGS = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Options for every @njit kernel: cached on disk so a new process does not recompile,
# nogil so kernels can run concurrently in threads (e.g. Dask workers).
NUMBA_OPTIONS = dict(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")

# A mini-batch is split into at most this many chunks of at least MIN_ROWS_PER_CHUNK rows.
# The split depends on the batch size only, never on the thread count, and the chunk
# partial sums are added in chunk order: results are bit-identical for any n_threads.
MAX_CHUNKS = 16
MIN_ROWS_PER_CHUNK = 64

# Sparse (CSR) batches: chunks of at least this many rows. Each chunk has a dense
# accumulator of all d * k gradient sums (zeroed per batch and added in chunk order), so
# a chunk must carry enough non-zeros to pay for it: a batch of 256 rows is one chunk.
# The split depends on the batch size only, as for dense rows.
SPARSE_ROWS_PER_CHUNK = 4096

# Below this many multiply-adds per mini-batch the work runs serially: opening a
# parallel region costs microseconds, more than a small batch takes. Serial and parallel
# paths walk the same chunks in the same order, so the choice never changes a result.
PARALLEL_MIN_WORK = 65536

# Mini-batches of several chunks on several threads run on a team of threads (Numba's and
# Cython's): one parallel region per epoch, no fork/join per batch; the members take the
# chunks in tickets and wait only for the update before their ticket's batch (a member that
# waits long asks the late member to sit out a while, TEAM_WAIT_CYCLES). False: Cython runs
# such batches as before its team (a fork/join per large batch, small ones serially), for
# comparison (benchmarks/team_threads.py). The choice never changes a result.
TEAM_BATCHES = True

# A member of a team (Numba's, Cython's) that spun longer than this many cycles of the
# processor's time-stamp counter (0.47 ms at this VM's 2.25 GHz) waiting for the update of
# the batch before its ticket's, or had to yield its core in 3 waits in a row, concludes
# that the member that published that update shares a core with another thread (a machine
# with more runnable threads than cores) and asks it to sit out: between two tickets, it
# yields its core for 2^19 cycles (0.23 ms), then rejoins; asked again, twice as long, up
# to 2^25 cycles (the constants of backends/numba/team.py). An ordinary wait lasts a batch
# (microseconds); a time slice lost to another process, milliseconds. 0: no long waits
# (the yields still count). No effect on results.
TEAM_WAIT_CYCLES = 1 << 20

# Extra entries at the end of each per-chunk buffer row (64 bytes of float64), so that
# chunks running on different threads never write to the same cache line.
ROW_PADDING = 8

# Rows per block inside a chunk: decision values, loss derivatives and gradient sums are
# computed block by block, so a block of X rows (64 x 100 float64 = 51 kB) is still in
# cache when it is read the second time.
ROWS_PER_BLOCK = 64

# Multi-output linear models compute a block's decision values and gradient as two BLAS
# products; a block holds about this many entries of X (32,768: 256 kB of float64, half
# of the per-core L2 here), so it is still in cache for the second product, and at
# least ROWS_PER_BLOCK, at most 512 rows.
SEVERAL_BLOCK_ENTRIES = 1 << 15

# Early stopping's validation loss reads the held-out rows where they are, gathering a
# block of them at a time: about this many values (of X, or of a network's widest layer)
# per block, 8 MiB of float64, never an n x d copy.
HELD_OUT_VALUES = 2**20
# ... and at least this many rows (a one-row product would round differently, see
# fastgd.backends.shared.held_out_loss)
HELD_OUT_MIN_ROWS = 64

# Software prefetch (Numba kernels of the linear family, fastgd.backends.numba.prefetch):
# while a row is computed, the row PREFETCH_AHEAD places later in the epoch's order is
# requested from memory, one request per CACHE_LINE_BYTES. This matters for shuffled
# epochs, whose rows are scattered (the hardware prefetchers follow sequential streams
# only); PREFETCH_IN_ORDER says whether rows read in order are prefetched too (as the
# Cython kernels do: 8-15% faster mini-batches and 25-35% faster full batches on 1 and 2
# threads, A/B with no other job on the VM, README "Performance"), and 0 rows ahead turns
# prefetching off. No effect on any result. 12 rows ahead (4 before): on an AVX-512 VM
# with a 1-thread streaming limit near 40 GB/s (twice the AVX2 VM's), 4 rows (3.2 kB at
# d = 100) were too close to cover the memory latency; one epoch of 1,000,000 x 100 in
# order on 1 thread took 35-42 ms with 4 and 29-30 ms with 12 (8: 30-35, 16 and 24 as 12;
# README "On an AVX-512 machine").
CACHE_LINE_BYTES = 64
PREFETCH_AHEAD = 12
PREFETCH_IN_ORDER = True
# The locality of those requests: 2 (x86 prefetcht1) brings a line into L2 but not L1, 3
# (prefetcht0) into L1 too. A request into L1 holds one of the core's few L1 miss buffers
# until its line arrives, and on a Zen 4 VM those buffers, not the memory, capped the
# requests in flight; L1's own prefetcher then takes the lines from L2. Zen 4 VM, 1
# thread, 1,000,000 x 100: a bare read of shuffled rows reached 22-27% of the streaming
# limit with locality 3 and 28-37% with 2; fastgd's kernels alone, rows in order, batch
# 32 / 256: numba 47-53% / 53-58% -> 79-95% / 80-88%, cython 42-49% / 42-49% -> 71-85% /
# 76-87%; shuffled, numba 14-19% -> 17-23% (README "Rows requested into L2").
ROW_PREFETCH_LOCALITY = 2
# Shuffled rows are requested a second time, SHUFFLED_L1_AHEAD places ahead, into L1
# (locality 3): requested into L2 only, each row's lines still missed L1 when it was read,
# and with them the loads of the weights and G waited behind those misses (0 turns it off).
SHUFFLED_L1_AHEAD = 6

# shuffle="blocks" (fastgd.training.orders): each epoch permutes blocks of this many
# consecutive rows and visits the rows of each block in order. Long runs of neighbouring
# rows are read at nearly streaming speed; short ones let batches mix more of the data.
SHUFFLE_BLOCK_ROWS = 32

# The full-batch passes of Newton and L-BFGS over dense rows of a linear model run in row
# blocks of about this much work (rows x (d + 1)^2 x Hessian blocks, or rows x (d + 1) x
# outputs without a Hessian: about a second here), so that Ctrl-C stops a long pass at
# the end of a block. Passes smaller than one block (1,000,000 x 100 with its Hessian)
# are one call, as before.
PASS_BLOCK_WORK = 2 * 10**10
