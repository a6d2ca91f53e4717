using Microsoft.ML.OnnxRuntime;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Rewards;

/// <summary>
/// An ONNX image model fed as its card says (DESIGN §8): samples [C, H, W] in the data range are mapped to images u ∈ [0, 1]
/// (clamped, as their PNGs are), given the model's channels (grey ↔ RGB: replicated, or BT.601 luma), resized bilinearly
/// (half-pixel centres, as PIL and torch do) to the model's size, normalised, and run in batches. Used by
/// <see cref="OnnxReward"/> (a reward) and by the evaluators of <c>quality</c> and <c>sweep</c>.
/// </summary>
/// <remarks>Thread-safe: calls are serialised. Owns its session; dispose it.</remarks>
public sealed class OnnxImageModel : IDisposable
{
    private readonly InferenceSession _session;
    private readonly object _gate = new();
    private readonly int[] _inputShape;   // [C, H, W] the model is fed
    private readonly DataRange _range;
    private long _evaluations;

    /// <summary>Opens the card's model for samples of <paramref name="sampleShape"/> in <paramref name="range"/>.</summary>
    /// <param name="card">The card (<see cref="RewardCard.Read"/>).</param>
    /// <param name="sampleShape">[C, H, W] of the diffusion model's samples.</param>
    /// <param name="range">The samples' data range; null: [−1, 1], the convention of the PNGs.</param>
    /// <param name="options">Device, threads and the session seam (the card's model is run like the denoiser).</param>
    /// <param name="outputs">Outputs that must exist (besides the card's).</param>
    /// <param name="parameter">The parameter errors name.</param>
    /// <exception cref="ConfigException">A sample that is not an image, a model input or output that does not fit the card, or sizes that do not agree; one line.</exception>
    public OnnxImageModel(RewardCard card, IReadOnlyList<int> sampleShape, DataRange? range, DenoiserOptions? options = null,
                          IReadOnlyList<string>? outputs = null, string parameter = "reward")
    {
        Card = card;
        Parameter = parameter;
        ConfigException Bad(string why) => ConfigException.For(parameter, $"{card.ModelPath}: {why}");
        if (sampleShape.Count != 3 || sampleShape[0] is not (1 or 3))
            throw ConfigException.For(parameter, $"{card.Source}: image rewards need image samples [1 or 3, H, W], the model's are [{string.Join(", ", sampleShape)}]");
        SampleShape = sampleShape.ToArray();
        _range = range ?? new DataRange(-1, 1);
        _session = OnnxDenoiser.OpenSession(card.ModelPath, options ?? new DenoiserOptions());
        try
        {
            var inputs = _session.InputMetadata;
            InputName = card.Input ?? (inputs.Count == 1 ? inputs.Keys.Single() : throw Bad($"has inputs {string.Join(", ", inputs.Keys)}; the card must name one ('input')"));
            if (!inputs.TryGetValue(InputName, out var input)) throw Bad($"has no input '{InputName}' (inputs: {string.Join(", ", inputs.Keys)})");
            if (inputs.Count > 1) throw Bad($"has inputs {string.Join(", ", inputs.Keys)}; a reward model takes one image input");
            if (input.ElementDataType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
                throw Bad($"input '{InputName}' is {input.ElementDataType}; reward models take float32 images");
            if (input.Dimensions.Length != 4) throw Bad($"input '{InputName}' has rank {input.Dimensions.Length}, expected [batch, channels, height, width]");
            var dims = input.Dimensions;
            int channels = dims[1] > 0 ? dims[1] : SampleShape[0];
            if (channels is not (1 or 3)) throw Bad($"input '{InputName}' has {channels} channels, expected 1 or 3");
            int height = dims[2] > 0 ? dims[2] : card.Size?[0] ?? SampleShape[1];
            int width = dims[3] > 0 ? dims[3] : card.Size?[1] ?? SampleShape[2];
            if (card.Size is { } size && (size[0] != height || size[1] != width))
                throw ConfigException.For(parameter, $"{card.Source}: 'size' is [{size[0]}, {size[1]}] but the model's input is fixed at [{height}, {width}]");
            _inputShape = [channels, height, width];
            if (card.Normalization.Mean.Length is not 1 && card.Normalization.Mean.Length != channels)
                throw ConfigException.For(parameter, $"{card.Source}: the normalisation has {card.Normalization.Mean.Length} means for {channels} input channels");
            OutputName = card.Output ?? (_session.OutputMetadata.Count == 1 ? _session.OutputMetadata.Keys.Single()
                : throw Bad($"has outputs {string.Join(", ", _session.OutputMetadata.Keys)}; the card must name one ('output')"));
            foreach (var name in new[] { OutputName }.Concat(outputs ?? []).Concat(card.Features is { } f ? [f] : []))
                if (!_session.OutputMetadata.ContainsKey(name)) throw Bad($"has no output '{name}' (outputs: {string.Join(", ", _session.OutputMetadata.Keys)})");
            // One zero image: a model that loads but cannot run at this size is bad input too, found now.
            try { OutputSizes = RunBatch(new float[SampleSize], 1, [OutputName, .. outputs ?? [], .. card.Features is { } g ? new[] { g } : []]).Select(o => o.Length).ToArray(); }
            catch (OnnxRuntimeException e) { throw Bad($"does not run on [1, {string.Join(", ", _inputShape)}] images ({e.Message.Split('\n')[0]})"); }
            _evaluations = 0;
        }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    /// <summary>The card the model was opened with.</summary>
    public RewardCard Card { get; }

    /// <summary>The parameter errors name.</summary>
    public string Parameter { get; }

    /// <summary>The diffusion model's sample shape [C, H, W].</summary>
    public IReadOnlyList<int> SampleShape { get; }

    /// <summary>Values per sample.</summary>
    public int SampleSize => SampleShape[0] * SampleShape[1] * SampleShape[2];

    /// <summary>[C, H, W] of the model's input (after channel conversion and resizing).</summary>
    public IReadOnlyList<int> InputShape => _inputShape;

    /// <summary>The input's name.</summary>
    public string InputName { get; }

    /// <summary>The card's output.</summary>
    public string OutputName { get; }

    /// <summary>Values per sample of the card's output, then of the other outputs asked for, then of the features.</summary>
    public IReadOnlyList<int> OutputSizes { get; }

    /// <summary>Samples evaluated so far (one sample in a batch of B counts 1).</summary>
    public long Evaluations => Interlocked.Read(ref _evaluations);

    /// <summary>Samples per ONNX call.</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>The named outputs for <paramref name="count"/> samples, each [count × values per sample].</summary>
    public float[][] Run(ReadOnlySpan<float> samples, int count, IReadOnlyList<string> outputs, CancellationToken cancellation = default)
    {
        if (samples.Length != (long)count * SampleSize) throw new ArgumentException($"{samples.Length} values are not {count} samples of {SampleSize}", nameof(samples));
        var parts = outputs.Select(_ => new List<float>()).ToArray();
        for (int start = 0; start < count; start += BatchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            int n = Math.Min(BatchSize, count - start);
            var batch = RunBatch(samples.Slice(start * SampleSize, n * SampleSize), n, outputs);
            for (int o = 0; o < outputs.Count; o++) parts[o].AddRange(batch[o]);
        }
        return parts.Select(p => p.ToArray()).ToArray();
    }

    private float[][] RunBatch(ReadOnlySpan<float> samples, int n, IReadOnlyList<string> outputs)
    {
        var input = Preprocess(samples, n);
        long[] shape = [n, .. _inputShape.Select(d => (long)d)];
        lock (_gate)
        {
            using var runOptions = new RunOptions();
            using var registration = NetworkCancellation.Current.Register(() => runOptions.Terminate = true);
            using var value = OrtValue.CreateTensorValueFromMemory(input, shape);
            using var results = _session.Run(runOptions, [InputName], [value], outputs.ToArray());
            NetworkCancellation.Current.ThrowIfCancellationRequested();
            _evaluations += n;
            return results.Select(r => r.GetTensorDataAsSpan<float>().ToArray()).ToArray();
        }
    }

    /// <summary>The model's input for <paramref name="n"/> samples: [0, 1] images, the model's channels and size, normalised.</summary>
    public float[] Preprocess(ReadOnlySpan<float> samples, int n)
    {
        int c = SampleShape[0], h = SampleShape[1], w = SampleShape[2];
        int ci = _inputShape[0], hi = _inputShape[1], wi = _inputShape[2];
        var norm = Card.Normalization;
        float low = _range.Low, span = _range.High - _range.Low;
        var result = new float[(long)n * ci * hi * wi];
        var unit = new float[c * h * w];
        var plane = new float[h * w];
        for (int s = 0; s < n; s++)
        {
            var sample = samples.Slice(s * unit.Length, unit.Length);
            for (int k = 0; k < unit.Length; k++) unit[k] = Math.Clamp((sample[k] - low) / span, 0f, 1f);
            for (int ch = 0; ch < ci; ch++)
            {
                // Grey → RGB replicates the plane; RGB → grey takes BT.601 luma.
                if (c == ci) unit.AsSpan(ch * h * w, h * w).CopyTo(plane);
                else if (c == 1) unit.AsSpan(0, h * w).CopyTo(plane);
                else for (int k = 0; k < plane.Length; k++) plane[k] = 0.299f * unit[k] + 0.587f * unit[h * w + k] + 0.114f * unit[2 * h * w + k];
                var target = result.AsSpan((s * ci + ch) * hi * wi, hi * wi);
                Resize(plane, h, w, target, hi, wi);
                double mean = norm.Mean.Length == 1 ? norm.Mean[0] : norm.Mean[ch], std = norm.Std.Length == 1 ? norm.Std[0] : norm.Std[ch];
                for (int k = 0; k < target.Length; k++) target[k] = (float)((target[k] * norm.Scale - mean) / std);
            }
        }
        return result;
    }

    /// <summary>Bilinear resampling with half-pixel centres (no antialiasing); a copy when the sizes agree.</summary>
    internal static void Resize(ReadOnlySpan<float> source, int h, int w, Span<float> target, int th, int tw)
    {
        if (h == th && w == tw) { source.CopyTo(target); return; }
        double sy = (double)h / th, sx = (double)w / tw;
        for (int y = 0; y < th; y++)
        {
            double fy = Math.Clamp((y + 0.5) * sy - 0.5, 0, h - 1);
            int y0 = (int)fy, y1 = Math.Min(y0 + 1, h - 1);
            double dy = fy - y0;
            for (int x = 0; x < tw; x++)
            {
                double fx = Math.Clamp((x + 0.5) * sx - 0.5, 0, w - 1);
                int x0 = (int)fx, x1 = Math.Min(x0 + 1, w - 1);
                double dx = fx - x0;
                target[y * tw + x] = (float)((1 - dy) * ((1 - dx) * source[y0 * w + x0] + dx * source[y0 * w + x1])
                                             + dy * ((1 - dx) * source[y1 * w + x0] + dx * source[y1 * w + x1]));
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _session.Dispose();
}
