using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>
/// One prompt's <c>encoder_hidden_states</c> (DESIGN §9): <see cref="Length"/> positions × <see cref="Width"/> features,
/// as a text encoder's <c>last_hidden_state</c> gives it for one prompt. Immutable once made; a network binding that
/// was fed this embedding recognises it by reference and does not copy it again.
/// </summary>
public sealed class TextEmbedding
{
    private readonly float[] _values;

    /// <summary>Wraps <paramref name="values"/> (C order, [length, width]); the array is copied.</summary>
    /// <exception cref="ArgumentException">The sizes do not agree or a value is NaN/±∞.</exception>
    public TextEmbedding(ReadOnlySpan<float> values, int length, int width)
    {
        if (length < 1 || width < 1) throw new ArgumentException($"an embedding has positive length and width, got [{length}, {width}]");
        if (values.Length != (long)length * width) throw new ArgumentException($"[{length}, {width}] holds {(long)length * width} values, got {values.Length}");
        foreach (float v in values)
            if (!float.IsFinite(v)) throw new ArgumentException("an embedding holds NaN or infinite values");
        _values = values.ToArray();
        Length = length;
        Width = width;
    }

    /// <summary>Sequence positions (77 for CLIP's text encoder).</summary>
    public int Length { get; }

    /// <summary>Features per position (768 for Stable Diffusion 1.5).</summary>
    public int Width { get; }

    /// <summary>The values, [length, width] in C order.</summary>
    public ReadOnlySpan<float> Values => _values;

    /// <summary>Checks that <paramref name="network"/> takes hidden states of this embedding's shape.</summary>
    /// <param name="network">The conditional network.</param>
    /// <param name="source">How messages name the network (its file), or null.</param>
    /// <param name="parameter">The parameter the embedding came from (<c>conditioning</c>; <c>encoderHiddenStates</c> when the caller gave the hidden states).</param>
    /// <exception cref="ConfigException">The network takes no conditioning, or not of this shape (parameter <paramref name="parameter"/>).</exception>
    public void CheckFits(IConditionalDenoiser network, string? source = null, string parameter = "conditioning")
    {
        string what = source is null ? "the network" : source;
        if (network.ConditioningShape is not { } shape)
            throw ConfigException.For(parameter, $": {what} takes no encoder_hidden_states; it is unconditional");
        if ((shape.Length is { } l && l != Length) || (shape.Width is { } w && w != Width))
            throw ConfigException.For(parameter, $": hidden states of [{Length}, {Width}] do not fit {what}'s encoder_hidden_states [batch, {shape.Length?.ToString() ?? "?"}, {shape.Width?.ToString() ?? "?"}]");
    }

    /// <summary>Rows of a <c>.npy</c> array of shape [L, D], [1, L, D] or [K, L, D] (K embeddings, e.g. negative then positive).</summary>
    /// <param name="array">The array.</param>
    /// <param name="parameter">The parameter errors name.</param>
    /// <exception cref="ConfigException">The array is not rank 2 or 3, or holds NaN/±∞.</exception>
    public static IReadOnlyList<TextEmbedding> FromArray(IO.NpyArray array, string parameter)
    {
        var shape = array.Shape;
        (int count, int length, int width) = shape.Length switch
        {
            2 => (1, shape[0], shape[1]),
            3 => (shape[0], shape[1], shape[2]),
            _ => throw ConfigException.For(parameter, $": shape [{string.Join(", ", shape)}]; expected [length, width] or [count, length, width] hidden states"),
        };
        if (count < 1 || length < 1 || width < 1) throw ConfigException.For(parameter, $": shape [{string.Join(", ", shape)}] is empty");
        if (array.Data.Any(v => !float.IsFinite(v))) throw ConfigException.For(parameter, ": holds NaN or infinite values");
        int size = length * width;
        return Enumerable.Range(0, count).Select(k => new TextEmbedding(array.Data.AsSpan(k * size, size), length, width)).ToArray();
    }
}

/// <summary>
/// The conditioning of a batch laid out in blocks: rows [k·<see cref="RowsPerEmbedding"/>, (k+1)·<see cref="RowsPerEmbedding"/>)
/// take <see cref="Embeddings"/>[k]. Plain conditioning is one block; classifier-free guidance's batch is two (the
/// negative prompt's rows, then the prompt's), run as one network call.
/// </summary>
/// <param name="Embeddings">The embeddings of the blocks, all of one shape.</param>
/// <param name="RowsPerEmbedding">Rows per block.</param>
public readonly record struct EmbeddingRows(IReadOnlyList<TextEmbedding> Embeddings, int RowsPerEmbedding)
{
    /// <summary>Number of rows the blocks cover.</summary>
    public int Rows => Embeddings.Count * RowsPerEmbedding;

    /// <summary>The embedding of batch row <paramref name="row"/>.</summary>
    public TextEmbedding For(int row) => Embeddings[row / RowsPerEmbedding];
}

/// <summary>
/// A noise predictor that also takes <c>encoder_hidden_states</c> (DESIGN §9): ε̂(x, t, c). The ONNX network of a
/// Stable-Diffusion-shaped model implements it; conditioning and classifier-free guidance (Guidance) decorate it into
/// an <see cref="IDenoiser"/>, which is all samplers see.
/// </summary>
public interface IConditionalDenoiser : IDenoiser
{
    /// <summary>
    /// The hidden-state shape the network declares, [length, width] with null where the export left it dynamic; null
    /// when the network has no conditioning input.
    /// </summary>
    (int? Length, int? Width)? ConditioningShape { get; }

    /// <summary>Writes ε̂(x, t, c) for a batch whose rows are conditioned as <paramref name="conditioning"/> says.</summary>
    /// <exception cref="ConfigException">The network has no conditioning input, or the embeddings do not fit it.</exception>
    void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, EmbeddingRows conditioning, Span<float> noise);
}
