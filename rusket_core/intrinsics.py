"""Low-level numba intrinsics shared by the kernels (currently: a cache prefetch hint)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_LINE = 64  # bytes per cache line on the CPUs numba targets (x86-64, arm64)


@intrinsic
def prefetch_row(typingctx, array, row):
    """Ask the CPU to start loading row ``row`` of a C-contiguous 2-D array into cache.

    A hint only (LLVM ``llvm.prefetch``, read, high locality): it never faults and never changes
    a result. SGD kernels call it for the rows of the next sample so their loads overlap the
    current update instead of stalling it.
    """
    if not (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"):
        return None
    if not isinstance(row, types.Integer):
        return None
    sig = types.void(array, row)

    def codegen(context, builder, signature, args):
        arrty, rowty = signature.args
        arr = context.make_array(arrty)(context, builder, args[0])
        r = context.cast(builder, args[1], rowty, types.intp)
        shape = cgutils.unpack_tuple(builder, arr.shape)
        strides = cgutils.unpack_tuple(builder, arr.strides)
        zero = context.get_constant(types.intp, 0)
        first = cgutils.get_item_pointer2(context, builder, arr.data, shape, strides, "C", [r, zero])
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(first, i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        i32 = ir.IntType(32)
        row_bytes = strides[0]
        step = context.get_constant(types.intp, _LINE)
        with cgutils.for_range_slice(builder, zero, row_bytes, step) as (offset, _):
            # rw=0 (read), locality=3 (keep in all cache levels), cache type=1 (data)
            builder.call(fn, [builder.gep(base, [offset]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
