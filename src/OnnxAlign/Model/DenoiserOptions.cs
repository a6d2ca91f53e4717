using OnnxAlign.Core;
namespace OnnxAlign.Model;

/// <summary>How an ONNX network is run.</summary>
public sealed record DenoiserOptions
{
    /// <summary><c>cpu</c> (default), <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Intra-op threads; null uses every core.</summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>Shape of one sample when the model leaves it dynamic (e.g. [3, 64, 64]); null reads it from the model.</summary>
    public IReadOnlyList<int>? SampleShape { get; init; }

    /// <summary>
    /// The application's seam into the ONNX Runtime session: called with the session options after the library has set
    /// its own (full graph optimisation, threads, denormals as zero, the CUDA provider of <see cref="Device"/>) and
    /// before the session is created. Append an execution provider here (DirectML, CoreML, TensorRT, ROCm, OpenVINO,
    /// from the native package the application references), set a profiling path, or override a setting. The library
    /// owns and disposes the <c>SessionOptions</c>; do not keep it.
    /// </summary>
    public Action<Microsoft.ML.OnnxRuntime.SessionOptions>? ConfigureSession { get; init; }

    /// <summary>The CUDA device index of <see cref="Device"/>, or null for CPU.</summary>
    /// <exception cref="ConfigException">The device string is not cpu, cuda or cuda:N.</exception>
    public int? CudaDeviceId => Device switch
    {
        "cpu" => null,
        "cuda" => 0,
        _ when Device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(Device.AsSpan(5), out int id) && id >= 0 => id,
        _ => throw ConfigException.For("DenoiserOptions.Device", $"'{Device}': expected cpu, cuda or cuda:N"),
    };
}
