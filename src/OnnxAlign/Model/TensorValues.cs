using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxAlign.Model;

/// <summary>
/// float32 values into and out of ONNX tensors that hold float32 or float16 (a half-precision export's inputs and
/// outputs): the library computes in float32 and rounds only at the network's edge.
/// </summary>
internal static class TensorValues
{
    /// <summary>Writes <paramref name="values"/> into a tensor's raw data from element <paramref name="offset"/> on.</summary>
    public static void Write(ReadOnlySpan<float> values, Span<byte> raw, TensorElementType type, int offset = 0)
    {
        if (type == TensorElementType.Float16)
        {
            var destination = MemoryMarshal.Cast<byte, Half>(raw).Slice(offset, values.Length);
#if NET9_0_OR_GREATER
            TensorPrimitives.ConvertToHalf(values, destination);
#else
            for (int i = 0; i < values.Length; i++) destination[i] = (Half)values[i];
#endif
        }
        else
            values.CopyTo(MemoryMarshal.Cast<byte, float>(raw).Slice(offset, values.Length));
    }

    /// <summary>Reads the first <c>values.Length</c> elements of a tensor's raw data as float32.</summary>
    public static void Read(ReadOnlySpan<byte> raw, TensorElementType type, Span<float> values)
    {
        if (type == TensorElementType.Float16)
        {
            var source = MemoryMarshal.Cast<byte, Half>(raw)[..values.Length];
#if NET9_0_OR_GREATER
            TensorPrimitives.ConvertToSingle(source, values);
#else
            for (int i = 0; i < values.Length; i++) values[i] = (float)source[i];
#endif
        }
        else
            MemoryMarshal.Cast<byte, float>(raw)[..values.Length].CopyTo(values);
    }

    /// <summary>A whole float32 or float16 tensor as float32 values.</summary>
    public static float[] ToSingles(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var values = new float[info.ElementCount];
        Read(value.GetTensorMutableRawData(), info.ElementDataType, values);
        return values;
    }

    /// <summary>A CPU tensor of <paramref name="type"/> (float32 or float16) holding <paramref name="values"/>; the caller disposes it.</summary>
    public static OrtValue Create(ReadOnlySpan<float> values, TensorElementType type, long[] shape)
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        Write(values, value.GetTensorMutableRawData(), type);
        return value;
    }
}
