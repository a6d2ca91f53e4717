using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>
/// Classifier-free guidance (Ho &amp; Salimans 2022) as a decorator of the denoiser (DESIGN §9):
/// ε̃(x, t) = ε̂(x, t, c_u) + w·(ε̂(x, t, c) − ε̂(x, t, c_u)), with c_u the negative prompt's hidden states (the empty
/// prompt's by default: that, not zeros, is the unconditional input) and w the guidance scale. Both branches go
/// through the network as one batch of 2B rows (the negative block, then the prompt's), as diffusers' pipelines do;
/// a model with a fixed batch size is fed in chunks by the network itself. The combination is taken in ε space, which
/// equals diffusers' combination in the network's own output space (v and x̂0 are affine in ε at fixed x).
/// </summary>
/// <remarks>
/// The guided law is not a tilt of p(·|c) for w ≠ 1 (nor the law of any known density): a tilt composed with it
/// (a <see cref="LinearTilt"/> over this decorator shifts the input of both branches) targets no known law either, so
/// a report never calls such a run exact. With w = 1 the decorator is <see cref="ConditionedDenoiser"/>'s law and
/// calls the network once per row. Thread-safe: calls are serialised (they share buffers).
/// </remarks>
public sealed class ClassifierFreeGuidance : IDenoiser
{
    private readonly IConditionalDenoiser _network;
    private readonly object _gate = new();
    private float[] _doubled = [], _noise = [];

    /// <summary>Guides <paramref name="network"/> from <paramref name="negative"/> towards <paramref name="positive"/> with scale <paramref name="scale"/>.</summary>
    /// <exception cref="ConfigException">The network takes no conditioning, the embeddings do not fit it, or the scale is not finite.</exception>
    public ClassifierFreeGuidance(IConditionalDenoiser network, TextEmbedding negative, TextEmbedding positive, double scale)
    {
        if (!double.IsFinite(scale)) throw ConfigException.For("guidanceScale", $"{scale}: expected a finite number");
        negative.CheckFits(network);
        positive.CheckFits(network);
        if (negative.Length != positive.Length || negative.Width != positive.Width)
            throw ConfigException.For("conditioning", $": the negative hidden states are [{negative.Length}, {negative.Width}], the prompt's [{positive.Length}, {positive.Width}]; one batch needs one shape");
        _network = network;
        Negative = negative;
        Positive = positive;
        Scale = scale;
    }

    /// <summary>The unconditional branch's hidden states (the negative prompt's).</summary>
    public TextEmbedding Negative { get; }

    /// <summary>The prompt's hidden states.</summary>
    public TextEmbedding Positive { get; }

    /// <summary>The guidance scale w (1: the conditional law; 0: the negative prompt's law).</summary>
    public double Scale { get; }

    /// <summary>Network rows per sample and step: 2, or 1 when w is 0 or 1 (one branch).</summary>
    public int NetworkCallsPerSample => Scale is 0 or 1 ? 1 : 2;

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _network.SampleShape;

    /// <inheritdoc/>
    public int SampleSize => _network.SampleSize;

    /// <inheritdoc/>
    public NoiseSchedule Schedule => _network.Schedule;

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
    {
        if (Scale == 1) { _network.PredictNoise(x, batchSize, timestep, new EmbeddingRows([Positive], batchSize), noise); return; }
        if (Scale == 0) { _network.PredictNoise(x, batchSize, timestep, new EmbeddingRows([Negative], batchSize), noise); return; }
        int n = x.Length;
        lock (_gate)
        {
            if (_doubled.Length != 2 * n) { _doubled = new float[2 * n]; _noise = new float[2 * n]; }
            x.CopyTo(_doubled);
            x.CopyTo(_doubled.AsSpan(n));
            _network.PredictNoise(_doubled, 2 * batchSize, timestep, new EmbeddingRows([Negative, Positive], batchSize), _noise);
            var unconditional = _noise.AsSpan(0, n);
            var conditional = _noise.AsSpan(n, n);
            // ε_u + w (ε_c − ε_u)
            TensorPrimitives.Subtract(conditional, unconditional, noise);
            TensorPrimitives.MultiplyAdd(noise, (float)Scale, unconditional, noise);
        }
    }
}
