using OnnxAlign.Model;

namespace OnnxAlign.Rewards;

/// <summary>
/// A reward on a latent model's decoded images (DESIGN §8–§9): r(z) = r_image(decode(z / scaling_factor)). It has no
/// structure in the latent (the decoder is a network), so KL alignment serves it by the black-box methods of §8, whose
/// importance weights need r only at the particles, never a gradient.
/// </summary>
/// <remarks>Owns <see cref="Inner"/> (disposed with it); the decoder belongs to the caller.</remarks>
public sealed class DecodedReward : Reward
{
    private readonly VaeDecoder _decoder;

    /// <summary>Evaluates <paramref name="inner"/> (a reward on <paramref name="decoder"/>'s images) on decoded latents.</summary>
    /// <exception cref="ArgumentException">The inner reward is not on the decoder's images.</exception>
    public DecodedReward(Reward inner, VaeDecoder decoder) : base(inner.Name, decoder.LatentSize)
    {
        if (inner.Size != decoder.ImageSize) throw new ArgumentException($"the reward takes {inner.Size} values, the decoder makes images of {decoder.ImageSize}", nameof(inner));
        Inner = inner;
        _decoder = decoder;
    }

    /// <summary>The reward on decoded images.</summary>
    public Reward Inner { get; }

    /// <summary>Latents decoded so far (one per reward evaluation of a latent).</summary>
    public long Decodes { get; private set; }

    /// <inheritdoc/>
    public override bool HasGradient => false;

    /// <inheritdoc/>
    public override double[] EvaluateBatch(ReadOnlySpan<float> samples)
    {
        int n = samples.Length / Size;
        var images = _decoder.Decode(samples, n, NetworkCancellation.Current);
        Decodes += n;
        return Inner.EvaluateBatch(images);
    }

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<float> x) => EvaluateBatch(x)[0];

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<double> x)
    {
        var single = new float[x.Length];
        for (int i = 0; i < x.Length; i++) single[i] = (float)x[i];
        return Evaluate(single);
    }

    /// <summary>Not available: the decoder is run without gradients (black-box rewards need none).</summary>
    public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient) =>
        throw new NotSupportedException($"'{Name}' is evaluated on decoded images: it has no gradient in the latent");

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) Inner.Dispose();
    }
}
