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
