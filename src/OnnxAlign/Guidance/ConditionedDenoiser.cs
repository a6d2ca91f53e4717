using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>
/// The conditional law p(x | c) as an <see cref="IDenoiser"/> (DESIGN §9): every row of every batch is fed the same
/// hidden states c. A tilt of it is exact as in §1 (c is part of the base law).
/// </summary>
public sealed class ConditionedDenoiser : IDenoiser
{
    private readonly IConditionalDenoiser _network;

    /// <summary>Conditions <paramref name="network"/> on <paramref name="conditioning"/>.</summary>
    /// <exception cref="Core.ConfigException">The network takes no conditioning, or not of this shape.</exception>
    public ConditionedDenoiser(IConditionalDenoiser network, TextEmbedding conditioning)
    {
        conditioning.CheckFits(network);
        _network = network;
        Conditioning = conditioning;
    }

    /// <summary>The hidden states every row is fed.</summary>
    public TextEmbedding Conditioning { get; }

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _network.SampleShape;

    /// <inheritdoc/>
    public int SampleSize => _network.SampleSize;

    /// <inheritdoc/>
    public NoiseSchedule Schedule => _network.Schedule;

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise) =>
        _network.PredictNoise(x, batchSize, timestep, new EmbeddingRows([Conditioning], batchSize), noise);
}
