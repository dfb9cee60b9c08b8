"""A 2D convolution whose filters are shared only inside regions of the output.

`LocallyConnected2D` covers three layers with one parameter, `share_size`, the size
of a share region in output positions:

- `(1, 1)`: every output position has its own filter (locally connected, unshared);
- a region as large as the output map, or `None`: one filter bank for the whole map,
  which is an ordinary convolution;
- in between: filters shared inside each region and different between regions
  (locally shared).

Regions tile the output from the top left corner. When an output side is not a
multiple of the region side, the axis has `ceil(output_side / share_side)` regions
and the last one is cut short to the `output_side % share_side` positions left.

Every op in `call` is a TFLite builtin that also has an int8 kernel (PAD,
TRANSPOSE, STRIDED_SLICE, CONCATENATION, RESHAPE, BATCH_MATMUL, ADD). A model that
uses the layer therefore converts with `TFLITE_BUILTINS` alone, in float32 and in
full int8. Patches are gathered with one strided slice per kernel offset, which
only copies. `tf.image.extract_patches` is not a TFLite builtin, and a convolution
with a one-hot kernel would spend kernel_rows * kernel_cols * in_channels
multiplications, nearly all by zero, on every patch element.

Inside `per_region_matmuls()` the layer multiplies each region separately
(SPLIT, one MatMul per region, CONCATENATION), which TFLite converts to one
FULLY_CONNECTED per region. The int8 TFLite export traces the nets that way.
XNNPACK in ai-edge-litert 2.3 takes an int8 BATCH_MATMUL only when its constant
kernel has zero point 0, and post-training quantization usually gives the kernel
another one. LiteRT's own kernel then ran the demo ANet's two layers in 2.0 ms
on one thread, against 0.12 ms for the per-region int8 FULLY_CONNECTED ops,
whose symmetric weights XNNPACK always takes (`scripts/profile_tflite.py`, Intel
Xeon with AVX-512). In float32 the single BATCH_MATMUL stays the faster form.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="lnet_anet_tf")
class LocallyConnected2D(keras.layers.Layer):
    """2D convolution with filters shared only inside `share_size` regions of the output.

    Input `[batch, rows, cols, in_channels]` (channels last, rows, cols and channels
    known when the layer is built), output `[batch, out_rows, out_cols, filters]`.

    `kernel` has shape `[regions, kernel_rows * kernel_cols * in_channels, filters]`,
    regions in row-major order and each row of a region's matrix in (kernel row,
    kernel col, in channel) order. With `share_size=(1, 1)` this is the layout of
    `tf_keras.layers.LocallyConnected2D(implementation=1)`; with one region,
    `kernel[0]` reshaped to `[kernel_rows, kernel_cols, in_channels, filters]` is a
    `Conv2D` kernel. `bias` has shape `[regions, filters]`.

    `padding` is "valid" or "same" with the meaning `Conv2D` gives them. `share_size`
    is an int, a pair of ints, or `None` for one region covering the output. A side
    larger than the output is clipped to it.

    Variance-scaling initializers (Glorot, He, LeCun) draw each region's filters
    with the fans of one `Conv2D` kernel (fan_in = kernel_rows * kernel_cols *
    in_channels, fan_out = kernel_rows * kernel_cols * filters), not with fans
    multiplied by the number of regions, so every sharing pattern starts at the
    scale of an ordinary convolution.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        share_size=(1, 1),
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be a positive int, got {filters!r}.")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}.")
        self.share_size = None if share_size is None else _pair(share_size, "share_size")
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        rows, cols, channels = input_shape[1:]
        if rows is None or cols is None or channels is None:
            raise ValueError(
                f"{self.name} needs known rows, cols and channels, got input shape "
                f"{tuple(input_shape)}. Give the model's Input a fixed spatial size."
            )
        self._geometry = _Geometry.create(
            (rows, cols), self.kernel_size, self.strides, self.padding, self.share_size
        )
        if self._geometry.out_rows <= 0 or self._geometry.out_cols <= 0:
            raise ValueError(
                f"{self.name}: input {rows}x{cols} is smaller than kernel "
                f"{self.kernel_size} with padding 'valid'. Use a larger input or "
                "padding='same'."
            )

        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        regions = self._geometry.regions
        patch_size = self.kernel_size[0] * self.kernel_size[1] * channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(regions, patch_size, self.filters),
            initializer=_per_region_initializer(
                self.kernel_initializer, regions, self.kernel_size, patch_size, self.filters
            ),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(regions, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    @property
    def regions(self):
        """Number of share regions as (region rows, region cols); needs a built layer."""
        return self._geometry.region_rows, self._geometry.region_cols

    @property
    def effective_share_size(self):
        """Share region side in output positions after clipping; needs a built layer."""
        return self._geometry.share_rows, self._geometry.share_cols

    def call(self, inputs):
        geometry = self._geometry

        # Rows and cols move in front of the batch, so that each patch slice below
        # copies contiguous [batch, channels] blocks and the regions can later be
        # grouped by reshapes, with the batch inside each region's matrix rows.
        padded = inputs
        if any(before or after for before, after in geometry.input_paddings):
            padded = ops.pad(inputs, geometry.input_paddings)
        spatial_first = ops.transpose(padded, (1, 2, 0, 3))
        patches = self._extract_patches(spatial_first)

        # [padded_out_rows, padded_out_cols, batch, patch] -> [regions, rows, patch]
        # where one region's rows are its (row, col, batch) triples.
        share_rows, share_cols = geometry.share_rows, geometry.share_cols
        grouped = ops.reshape(
            patches, (geometry.region_rows, share_rows, geometry.region_cols, -1)
        )
        if share_rows > 1 and geometry.region_cols > 1:
            grouped = ops.transpose(grouped, (0, 2, 1, 3))
        grouped = ops.reshape(grouped, (geometry.regions, -1, patches.shape[-1]))

        outputs = region_matmul(grouped, self.kernel, self.bias if self.use_bias else None)

        # Back to [out_rows, out_cols, batch, filters], dropping the positions that
        # only exist to fill the last, smaller region of each axis.
        outputs = ops.reshape(
            outputs, (geometry.region_rows, geometry.region_cols, share_rows, -1)
        )
        if share_rows > 1 and geometry.region_cols > 1:
            outputs = ops.transpose(outputs, (0, 2, 1, 3))
        outputs = ops.reshape(
            outputs, (geometry.padded_out_rows, geometry.padded_out_cols, -1, self.filters)
        )
        if (geometry.padded_out_rows, geometry.padded_out_cols) != (
            geometry.out_rows,
            geometry.out_cols,
        ):
            outputs = outputs[: geometry.out_rows, : geometry.out_cols]
        outputs = ops.transpose(outputs, (2, 0, 1, 3))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _extract_patches(self, spatial_first):
        """Gather patches: [rows, cols, batch, channels] -> [out rows, out cols, batch, patch].

        The gradient is written out because TensorFlow's own gradient of the
        strided slices (one StridedSliceGrad per kernel offset) ran several times
        slower on CPU (TensorFlow 2.21) than padding each block back and adding.
        """

        @ops.custom_gradient
        def extract(inputs):
            def gradient(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return self._scatter_patches(upstream, inputs.shape)

            return self._slice_patches(inputs), gradient

        return extract(spatial_first)

    def _kernel_offsets(self):
        for row in range(self.kernel_size[0]):
            for col in range(self.kernel_size[1]):
                yield row, col

    def _slice_patches(self, spatial_first):
        # One strided slice per kernel offset, concatenated on the channel axis so
        # that a patch is in (kernel row, kernel col, channel) order.
        geometry = self._geometry
        row_stride, col_stride = self.strides
        row_span = (geometry.padded_out_rows - 1) * row_stride + 1
        col_span = (geometry.padded_out_cols - 1) * col_stride + 1
        slices = [
            spatial_first[row : row + row_span : row_stride, col : col + col_span : col_stride]
            for row, col in self._kernel_offsets()
        ]
        if len(slices) == 1:
            return slices[0]
        return ops.concatenate(slices, axis=-1)

    def _scatter_patches(self, upstream, input_shape):
        # The adjoint of _slice_patches: each offset's block of the patch gradient
        # is spread out by the stride and padded back to where its slice came from.
        geometry = self._geometry
        rows, cols = input_shape[0], input_shape[1]
        channels = upstream.shape[-1] // (self.kernel_size[0] * self.kernel_size[1])
        terms = []
        for index, (row, col) in enumerate(self._kernel_offsets()):
            # One slice per block rather than one Split op, so that TensorFlow's
            # executor can run the copies in parallel.
            block = upstream[..., index * channels : (index + 1) * channels]
            block = _dilate(block, 0, self.strides[0])
            block = _dilate(block, 1, self.strides[1])
            row_span = (geometry.padded_out_rows - 1) * self.strides[0] + 1
            col_span = (geometry.padded_out_cols - 1) * self.strides[1] + 1
            paddings = (
                (row, rows - row - row_span),
                (col, cols - col - col_span),
                (0, 0),
                (0, 0),
            )
            terms.append(ops.pad(block, paddings))
        return tf.add_n(terms)

    def compute_output_shape(self, input_shape):
        geometry = _Geometry.create(
            input_shape[1:3], self.kernel_size, self.strides, self.padding, self.share_size
        )
        return (input_shape[0], geometry.out_rows, geometry.out_cols, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "share_size": self.share_size,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config


# Thread-local, so that a trace in one thread does not change another's.
_matmul_mode = threading.local()


# Not converted by AutoGraph: the quantization-aware tf_keras twin of the layer
# calls this function too, and tf_keras converts the code its layers call.
@tf.autograph.experimental.do_not_convert
def region_matmul(grouped, kernel, bias=None):
    """Multiply each region's rows by its own kernel and add its bias.

    `grouped` is [regions, rows, patch], `kernel` [regions, patch, filters] and
    `bias` [regions, filters] or None; the result is [regions, rows, filters].
    One batched matmul by default, one matmul per region inside
    `per_region_matmuls()`.
    """
    if not getattr(_matmul_mode, "per_region", False):
        outputs = tf.matmul(grouped, kernel)
        return outputs if bias is None else outputs + tf.expand_dims(bias, 1)

    # SPLIT and CONCATENATION rather than UNPACK and PACK, because the int8
    # export keeps UNPACK and PACK in float32 for the localization. Each
    # region's bias is added to its own product, so that the TFLite converter
    # folds it into that region's FULLY_CONNECTED.
    regions, patch_size, filters = kernel.shape
    products = []
    for region, block in enumerate(tf.split(grouped, regions, axis=0)):
        product = tf.matmul(tf.reshape(block, (-1, patch_size)), kernel[region])
        products.append(product if bias is None else product + bias[region])
    return tf.reshape(tf.concat(products, axis=0), (regions, -1, filters))


@contextlib.contextmanager
def per_region_matmuls():
    """Make `LocallyConnected2D` layers called in this thread compute one matmul per region.

    The outputs are the same as with the default single batched matmul, up to
    float rounding. Only calls made inside the context change, so a
    `tf.function` must be traced inside it, and a trace made before is not
    changed. Contexts nest.
    """
    previous = getattr(_matmul_mode, "per_region", False)
    _matmul_mode.per_region = True
    try:
        yield
    finally:
        _matmul_mode.per_region = previous


class _Geometry:
    """Output size, share regions and input padding of one layer for one input size."""

    @classmethod
    def create(cls, input_size, kernel_size, strides, padding, share_size):
        geometry = cls()
        pads = []
        out_sizes = []
        for size, kernel, stride in zip(input_size, kernel_size, strides):
            if padding == "same":
                out = -(-size // stride)
                total = max((out - 1) * stride + kernel - size, 0)
                pads.append([total // 2, total - total // 2])
            else:
                out = (size - kernel) // stride + 1
                pads.append([0, 0])
            out_sizes.append(out)
        geometry.out_rows, geometry.out_cols = out_sizes

        if share_size is None:
            share_size = out_sizes
        shares = [max(1, min(share, out)) for share, out in zip(share_size, out_sizes)]
        geometry.share_rows, geometry.share_cols = shares
        geometry.region_rows = -(-geometry.out_rows // geometry.share_rows)
        geometry.region_cols = -(-geometry.out_cols // geometry.share_cols)
        geometry.regions = geometry.region_rows * geometry.region_cols
        geometry.padded_out_rows = geometry.region_rows * geometry.share_rows
        geometry.padded_out_cols = geometry.region_cols * geometry.share_cols

        # Extra zero rows and cols at the end give every position of a partial
        # last region an input window. Their outputs are computed, then dropped.
        padded_outs = (geometry.padded_out_rows, geometry.padded_out_cols)
        for axis, (size, kernel, stride) in enumerate(zip(input_size, kernel_size, strides)):
            needed = (padded_outs[axis] - 1) * stride + kernel
            have = size + sum(pads[axis])
            pads[axis][1] += max(needed - have, 0)
        geometry.input_paddings = ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0))
        return geometry


def _dilate(tensor, axis, stride):
    """Insert stride - 1 zeros between the entries of `tensor` along leading `axis`."""
    if stride == 1:
        return tensor
    length = tensor.shape[axis]
    zeros = ops.zeros_like(tensor)
    interleaved = ops.stack([tensor] + [zeros] * (stride - 1), axis=axis + 1)
    shape = list(ops.shape(tensor))
    shape[axis] = length * stride
    dilated = ops.reshape(interleaved, shape)
    index = [slice(None)] * len(shape)
    index[axis] = slice(0, (length - 1) * stride + 1)
    return dilated[tuple(index)]


def _pair(value, name):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(item) for item in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}.")
    return value


def _per_region_initializer(initializer, regions, kernel_size, patch_size, filters):
    """Return `initializer` rescaled to draw `regions` stacked Conv2D kernels.

    Keras computes the fans of a [regions, patch, filters] shape as regions * patch
    and regions * filters, while one Conv2D kernel has fan_in = patch and
    fan_out = kernel_rows * kernel_cols * filters. The scale of a variance-scaling
    initializer is multiplied by the ratio of the two fans for its mode. Other
    initializers do not use fans and are returned unchanged.
    """
    if not isinstance(initializer, keras.initializers.VarianceScaling):
        return initializer
    stacked = {"fan_in": regions * patch_size, "fan_out": regions * filters}
    conv = {"fan_in": patch_size, "fan_out": kernel_size[0] * kernel_size[1] * filters}
    for fans in (stacked, conv):
        fans["fan_avg"] = (fans["fan_in"] + fans["fan_out"]) / 2
    factor = stacked[initializer.mode] / conv[initializer.mode]

    # get_config returns the seed the caller gave (None when unseeded).
    return keras.initializers.VarianceScaling(
        scale=initializer.scale * factor,
        mode=initializer.mode,
        distribution=initializer.distribution,
        seed=initializer.get_config()["seed"],
    )
