using System.Numerics.Tensors;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>What <c>vae_decoder/config.json</c> says of the latent space (diffusers' <c>AutoencoderKL</c> config).</summary>
/// <param name="ScalingFactor">The factor the diffusion model's latents carry: the decoder is fed latents / factor (SD 1.5: 0.18215).</param>
/// <param name="LatentChannels">Channels of a latent (4 for SD 1.x/2.x).</param>
/// <param name="Source">The file it was read from (or a description).</param>
public sealed record VaeConfig(double ScalingFactor, int LatentChannels, string Source)
{
    /// <summary>Reads the config; diffusers' defaults where a key is missing (scaling_factor 0.18215, latent_channels 4).</summary>
    /// <exception cref="ConfigException">Not JSON, or a value out of range.</exception>
    public static VaeConfig Read(string path)
    {
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new ConfigException($"{path}: not JSON ({e.Message})", e); }
        double scaling = root.TryGetProperty("scaling_factor", out var s) && s.TryGetDouble(out double sv) ? sv : 0.18215;
        int channels = root.TryGetProperty("latent_channels", out var c) && c.TryGetInt32(out int cv) ? cv : 4;
        if (!(scaling > 0) || !double.IsFinite(scaling)) throw new ConfigException($"{path}: scaling_factor {scaling}: expected a positive number");
        if (channels < 1) throw new ConfigException($"{path}: latent_channels {channels}: expected a positive integer");
        if (root.TryGetProperty("shift_factor", out var shift) && shift.ValueKind == JsonValueKind.Number && shift.GetDouble() != 0)
            throw new ConfigException($"{path}: shift_factor {shift.GetDouble()}: latents with a shift (SD3/Flux VAEs) are not supported");
        return new VaeConfig(scaling, channels, path);
    }
}

/// <summary>
/// The VAE decoder of a latent model (<c>vae_decoder/model.onnx</c>, DESIGN §9): <c>latent_sample</c> [batch, C, h, w]
/// → <c>sample</c> [batch, 1 or 3, H, W]. The diffusion model's x is the scaled latent; <see cref="Decode"/> divides
/// by the config's <see cref="VaeConfig.ScalingFactor"/> first, as diffusers' pipelines do.
/// </summary>
/// <remarks>Thread-safe: calls are serialised. Owns its session; dispose it.</remarks>
public sealed class VaeDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly object _gate = new();
    private readonly string _inputName, _outputName;
    private readonly TensorElementType _type;
    private readonly int[] _latentShape;

    /// <summary>Opens the decoder for latents of <paramref name="latentShape"/> (the UNet's sample shape).</summary>
    /// <exception cref="ConfigException">The network is not a decoder of such latents to images (found by decoding one zero latent).</exception>
    public VaeDecoder(string onnxPath, VaeConfig config, IReadOnlyList<int> latentShape, DenoiserOptions? options = null)
    {
        Path = onnxPath;
        Config = config;
        _latentShape = latentShape.ToArray();
        if (_latentShape.Length != 3 || _latentShape[0] != config.LatentChannels)
            throw new ConfigException($"{onnxPath}: the UNet's samples are [{string.Join(", ", latentShape)}], but {config.Source} says latents have {config.LatentChannels} channels");
        _session = OnnxDenoiser.OpenSession(onnxPath, options ?? new DenoiserOptions());
        try
        {
            var inputs = _session.InputMetadata;
            _inputName = inputs.ContainsKey("latent_sample") ? "latent_sample" : inputs.Count == 1 ? inputs.Keys.Single()
                : throw new ConfigException($"{onnxPath}: inputs {string.Join(", ", inputs.Keys)}; a VAE decoder takes latent_sample");
            if (inputs.Count > 1) throw new ConfigException($"{onnxPath}: inputs {string.Join(", ", inputs.Keys)}; a VAE decoder takes latent_sample only");
            _type = inputs[_inputName].ElementDataType;
            if (_type is not (TensorElementType.Float or TensorElementType.Float16))
                throw new ConfigException($"{onnxPath}: input '{_inputName}' is {_type}, expected float32 or float16");
            var outputs = _session.OutputMetadata;
            _outputName = outputs.ContainsKey("sample") ? "sample" : outputs.Count == 1 ? outputs.Keys.Single()
                : throw new ConfigException($"{onnxPath}: outputs {string.Join(", ", outputs.Keys)}; expected sample");
            // One zero latent: the image shape, and a decoder that loads but cannot run at this size is found now.
            var (_, shape) = RunBatch(new float[LatentSize], 1);
            if (shape.Length != 4 || shape[1] is not (1 or 3))
                throw new ConfigException($"{onnxPath}: decodes a [{string.Join(", ", latentShape)}] latent to [{string.Join(", ", shape)}], expected [1, 1 or 3, H, W] images");
            ImageShape = [(int)shape[1], (int)shape[2], (int)shape[3]];
        }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    /// <summary>The ONNX file.</summary>
    public string Path { get; }

    /// <summary>The latent space's config.</summary>
    public VaeConfig Config { get; }

    /// <summary>[C, H, W] of a decoded image.</summary>
    public IReadOnlyList<int> ImageShape { get; }

    /// <summary>Values per decoded image.</summary>
    public int ImageSize => ImageShape[0] * ImageShape[1] * ImageShape[2];

    /// <summary>Values per latent.</summary>
    public int LatentSize => _latentShape[0] * _latentShape[1] * _latentShape[2];

    /// <summary>Latents per ONNX call.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>The inputs and outputs, one line each (for <c>onnxalign inspect</c>).</summary>
    public string Describe() => OnnxDenoiser.DescribeSession(_session);

    /// <summary>Decodes <paramref name="count"/> scaled latents (the diffusion model's samples) to images, [count, C, H, W].</summary>
    /// <exception cref="ConfigException">The decoder fails on a batch.</exception>
    public float[] Decode(ReadOnlySpan<float> latents, int count, CancellationToken cancellation = default)
    {
        if (latents.Length != (long)count * LatentSize) throw new ArgumentException($"{latents.Length} values are not {count} latents of {LatentSize}", nameof(latents));
        using var scope = NetworkCancellation.Enter(cancellation);
        var images = new float[(long)count * ImageSize];
        var scaled = new float[Math.Min(count, BatchSize) * LatentSize];
        float inverse = (float)(1 / Config.ScalingFactor);
        for (int start = 0; start < count; start += BatchSize)
        {
            NetworkCancellation.Current.ThrowIfCancellationRequested();
            int n = Math.Min(BatchSize, count - start);
            var batch = scaled.AsSpan(0, n * LatentSize);
            TensorPrimitives.Multiply(latents.Slice(start * LatentSize, n * LatentSize), inverse, batch);
            var (decoded, _) = RunBatch(batch, n);
            decoded.CopyTo(images.AsSpan(start * ImageSize, n * ImageSize));
        }
        return images;
    }

    private (float[] Values, long[] Shape) RunBatch(ReadOnlySpan<float> latents, int n)
    {
        long[] shape = [n, .. _latentShape.Select(d => (long)d)];
        lock (_gate)
        {
            using var runOptions = new RunOptions();
            using var registration = NetworkCancellation.Current.Register(() => runOptions.Terminate = true);
            using var input = TensorValues.Create(latents, _type, shape);
            try
            {
                using var results = _session.Run(runOptions, [_inputName], [input], [_outputName]);
                NetworkCancellation.Current.ThrowIfCancellationRequested();
                var info = results[0].GetTensorTypeAndShape();
                float[] values = TensorValues.ToSingles(results[0]);
                if (info.Shape[0] != n) throw new ConfigException($"{Path}: decoded {n} latents to a batch of {info.Shape[0]}");
                return (values, info.Shape);
            }
            catch (OnnxRuntimeException e) when (!NetworkCancellation.Current.IsCancellationRequested)
            {
                throw new ConfigException($"{Path}: the VAE decoder failed on [{string.Join(", ", shape)}] latents ({e.Message.Split('\n')[0]})", e);
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _session.Dispose();
}
