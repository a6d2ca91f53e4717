using OnnxAlign.Model;

namespace OnnxAlign.Rewards;

/// <summary>
/// A reward on a latent model's decoded images (DESIGN §8–§9): r(z) = r_image(decode(z / scaling_factor)). It has no
/// structure in the latent (the decoder is a network), so KL alignment serves it by the black-box methods of §8, whose
/// importance weights need r only at the particles, never a gradient.
/// </summary>
/// <remarks>Owns <see cref="Inner"/> (disposed with it); the decoder belongs to the caller.</remarks>
public sealed class DecodedReward : BatchReward
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
    public override double[] EvaluateBatch(ReadOnlySpan<float> samples)
    {
        int n = samples.Length / Size;
        var images = _decoder.Decode(samples, n, NetworkCancellation.Current);
        Decodes += n;
        return Inner.EvaluateBatch(images);
    }

    /// <inheritdoc/>
    protected override string NoGradient => $"'{Name}' is evaluated on decoded images: it has no gradient in the latent";

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) Inner.Dispose();
    }
}
